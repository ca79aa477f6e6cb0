"""Datasets by name: bundled real sets, user folders, torchvision downloaders. See sassl.data.registry."""
from sassl.data.registry import Dataset, dataset_names, get_dataset, image_paths

__all__ = ["Dataset", "dataset_names", "get_dataset", "image_paths"]
