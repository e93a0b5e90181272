"""Data handling: getting the raw dataset into place and reading it."""
