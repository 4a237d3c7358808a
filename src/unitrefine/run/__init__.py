"""One training run: its stages, the checks before it, study sessions and workers, re-creating a run."""
