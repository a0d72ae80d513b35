"""Evaluate: held-out metrics, thresholds and the champion comparison: the registry gate."""
