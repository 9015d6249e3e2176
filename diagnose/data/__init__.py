"""Datasets as whole uint8 tensors on the training device, and the batches cut from them."""

from diagnose.data.batches import augment, shuffled_batches, to_input
from diagnose.data.datasets import DeviceData, RawData, read_dataset, split
from diagnose.data.synthetic import make_synthetic

__all__ = [
    "DeviceData",
    "RawData",
    "augment",
    "make_synthetic",
    "read_dataset",
    "shuffled_batches",
    "split",
    "to_input",
]
