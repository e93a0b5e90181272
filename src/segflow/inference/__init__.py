"""Sliding-window inference, postprocessing and `segflow predict`."""
