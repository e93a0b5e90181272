"""segflow: versioned, validated, tracked U-Net segmentation pipelines."""

__version__ = "0.1.0"
