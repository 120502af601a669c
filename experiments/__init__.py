"""Experiment drivers: the demo, sweeps, reports, data preparation."""
