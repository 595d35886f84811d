"""Datasets (paired, unpaired, class-labelled), reference-compatible preprocessing and safe image decoding."""

from transgan.data.classes import ClassFolderDataset, MnistIdxDataset, ZipClassDataset, class_dataset, read_idx
from transgan.data.images import SkipBadImages
from transgan.data.paired import AlignedDataset, PairedFoldersDataset, UnalignedDataset, paired_dataset
from transgan.data.transforms import CropFlip, Preprocess, split_key, tensor_to_image, to_tensor
from transgan.images import (
    IMAGE_EXTENSIONS,
    BadImageWarning,
    UnreadableImage,
    convert_image,
    decode_image,
    list_images,
    load_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "AlignedDataset",
    "BadImageWarning",
    "ClassFolderDataset",
    "CropFlip",
    "MnistIdxDataset",
    "PairedFoldersDataset",
    "Preprocess",
    "SkipBadImages",
    "UnalignedDataset",
    "UnreadableImage",
    "ZipClassDataset",
    "class_dataset",
    "convert_image",
    "decode_image",
    "list_images",
    "load_image",
    "paired_dataset",
    "read_idx",
    "split_key",
    "tensor_to_image",
    "to_tensor",
]
