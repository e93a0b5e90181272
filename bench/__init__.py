"""segflow benchmarks: timed scripts run as modules from the repository root (`python -m bench.<name>`)."""
