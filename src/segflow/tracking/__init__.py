"""Weights & Biases runs for the stages, and the provenance (git commit, data hash) they record."""
