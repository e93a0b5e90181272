"""What a run reports: the terminal summary, DVC plots, figures and model comparisons."""
