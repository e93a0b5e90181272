"""Augmentation pipelines built from params: MONAI dictionary transforms (3D), albumentations (2D)."""
