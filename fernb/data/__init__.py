"""Datasets: the synthetic face generator, real-dataset readers, splits and transforms."""
from fernb.data.datasets import FaceDataset, available_datasets, load_dataset, register_dataset

__all__ = ["FaceDataset", "available_datasets", "load_dataset", "register_dataset"]
