"""Reading the labelled units: metrics tables, SpikeInterface analyzers and export folders, labels, synthetic data."""
