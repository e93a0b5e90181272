"""Segmentation metrics (MONAI's implementations)."""
