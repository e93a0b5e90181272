"""Networks by MONAI name."""
