"""Datasets by name: bundled real sets, user folders, torchvision downloaders. See sassl.data.registry."""
from sassl.data.registry import (Dataset, dataset_names, get_dataset, held_out_split, image_paths, parse_name,
                                 splits_of)

__all__ = ["Dataset", "dataset_names", "get_dataset", "held_out_split", "image_paths", "parse_name",
           "splits_of"]
