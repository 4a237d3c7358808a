"""The model folder contract (skops, SpikeInterface's layout), its report, model card and plots."""
