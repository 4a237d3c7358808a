"""Applying models to new units: predict, the review queue, merging a review, suggesting what to label."""
