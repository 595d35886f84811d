"""Labelled image datasets for class-conditional generation: class folders, a zip of them, MNIST idx files."""

from __future__ import annotations

import gzip
import os
import random
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from transgan.data.images import SkipBadImages
from transgan.data.transforms import BICUBIC, split_key, to_tensor
from transgan.errors import TransganError
from transgan.images import (
    UnreadableImage,
    check_channels,
    convert_image,
    decode_image,
    is_image_file,
    list_images,
    load_image,
    peek_channels,
)

INFER_SAMPLE = 2000
SPLIT_NAMES = frozenset({"train", "test", "val", "valid", "validation"})
IDX_IMAGES = re.compile(r"^(.*)images[-.]idx3[-.]ubyte(\.gz)?$")


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to size, then center-crop to size x size (torchvision Resize + CenterCrop)."""
    w, h = img.size
    if (w, h) != (size, size):
        short, long = min(w, h), max(w, h)
        long = int(size * long / short)
        img = img.resize((size, long) if w <= h else (long, size), BICUBIC)
        left, top = round((img.width - size) / 2.0), round((img.height - size) / 2.0)
        img = img.crop((left, top, left + size, top + size))
    return img


def infer_channels(names: Sequence[str], peek: Callable[[str], int | None], where: str) -> int:
    """The one channel count the images share, from header reads; mixed counts are an error.

    Big datasets are judged on INFER_SAMPLE files spread evenly over them (reading 50,000 headers takes seconds);
    a file of another kind outside the sample is simply converted when loaded.
    """
    first: dict[int, str] = {}
    step = -(-len(names) // INFER_SAMPLE)  # ceil: 1 (every file) for datasets up to INFER_SAMPLE
    for name in names[::step]:
        channels = peek(name)
        if channels is None:
            continue  # unreadable: the dataset skips it with a warning when it is reached
        first.setdefault(channels, name)
        if len(first) == 2:
            raise TransganError(
                f"{where}: mixed grayscale and colour images ({first[1]} is grayscale, {first[3]} is colour); "
                "pass channels=1 or channels=3 to convert them all"
            )
    return next(iter(first), 3)


class _ClassImages(Dataset):
    """Shared item logic: key -> (index, seed), skip unreadable files, resize, optional flip, tensor."""

    class_names: list[str]
    labels: list[int]
    image_size: int
    channels: int
    flip: bool
    skip: SkipBadImages

    def _check_size(self, image_size: int) -> None:
        if image_size < 1:
            raise TransganError(f"image_size={image_size}: must be a positive number of pixels")

    def _load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor | int]:
        index, seed = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.skip(index, lambda i: self._item(i, seed))

    def _item(self, index: int, seed: int) -> dict[str, torch.Tensor | int]:
        img = resize_square(self._load(index), self.image_size)
        if self.flip and random.Random(seed).random() > 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {"image": to_tensor(img), "label": self.labels[index]}


class ClassFolderDataset(_ClassImages):
    """root/<class name>/<images>: class names are the sorted sub-folder names; images load lazily."""

    def __init__(self, root: str | Path, image_size: int, channels: int | None = None, flip: bool = False):
        self._check_size(image_size)
        self.root = Path(root)
        if not self.root.is_dir():
            list_images(self.root)  # raises the clear "not found" / "is a file" error
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise TransganError(f"{self.root}: no class sub-folders found; put images in {self.root}/<class name>/")
        self.files: list[Path] = []
        self.labels = []
        for label, class_dir in enumerate(class_dirs):
            try:
                files = list_images(class_dir)
            except TransganError:
                raise TransganError(
                    f"{class_dir}: class {class_dir.name!r} has no images; add some or remove it"
                ) from None
            self.files += files
            self.labels += [label] * len(files)
        self.class_names = [d.name for d in class_dirs]
        self.image_size, self.flip = image_size, flip
        if channels is None:
            channels = infer_channels([str(f) for f in self.files], peek_channels, str(self.root))
        self.channels = check_channels(channels)
        self.skip = SkipBadImages(len(self.files), str(self.root))

    def _load(self, index: int) -> Image.Image:
        return load_image(self.files[index], self.channels)


class ZipClassDataset(_ClassImages):
    """A zip of class folders, <split>/<class>/<file> or <class>/<file>; members are read on demand.

    Each process opens its own handle on first use: a ZipFile shared across forked workers reads garbage.
    """

    def __init__(
        self,
        zip_path: str | Path,
        image_size: int,
        channels: int | None = None,
        split: str | None = None,
        flip: bool = False,
    ):
        self._check_size(image_size)
        self.zip_path = Path(zip_path)
        if not self.zip_path.is_file():
            raise TransganError(f"{self.zip_path}: zip file not found; check the path")
        if not zipfile.is_zipfile(self.zip_path):
            raise TransganError(f"{self.zip_path}: not a zip file")
        with zipfile.ZipFile(self.zip_path) as zf:  # reading the directory of a big zip takes a while: once
            names = [n for n in zf.namelist() if is_image_file(n) and not _hidden(n)]
            self._index(names, split)
            if channels is None:
                channels = infer_channels(self.members, lambda n: _peek_member(zf, n), str(self.zip_path))
        self.channels = check_channels(channels)
        self.image_size, self.flip = image_size, flip
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None
        self.skip = SkipBadImages(len(self.members), str(self.zip_path))

    def _index(self, names: list[str], split: str | None) -> None:
        """members, labels and class_names from the zip's image names."""
        top = sorted({n.split("/")[0] for n in names if "/" in n})
        prefix = split.strip("/") + "/" if split else ""
        members = [n for n in names if n.startswith(prefix) and "/" in n[len(prefix) :]]
        if split and not members:
            raise TransganError(f"{self.zip_path}: no images under {prefix!r}; top-level folders are {top}")
        if not members:
            raise TransganError(f"{self.zip_path}: no class folders with images; expected <class>/<image> inside")
        classes = sorted({n[len(prefix) :].split("/")[0] for n in members})
        if not split and set(classes) <= SPLIT_NAMES and all(n.count("/") >= 2 for n in members):
            raise TransganError(f"{self.zip_path}: holds splits {classes}; pass split= one of them")
        members.sort()
        label_of = {name: label for label, name in enumerate(classes)}
        self.members = members
        self.labels = [label_of[n[len(prefix) :].split("/")[0]] for n in members]
        self.class_names, self.split = classes, split

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_zip"], state["_zip_pid"] = None, None  # an open handle must not travel to another process
        return state

    def _load(self, index: int) -> Image.Image:
        name = self.members[index]
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip, self._zip_pid = zipfile.ZipFile(self.zip_path), os.getpid()
        try:
            data = self._zip.read(name)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise UnreadableImage(f"{self.zip_path}:{name}", str(error)) from error
        return decode_image(data, f"{self.zip_path}:{name}", self.channels)


def _peek_member(zf: zipfile.ZipFile, name: str) -> int | None:
    try:
        with zf.open(name) as member:
            return peek_channels(member)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
        return None


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format), optionally gzipped, as a uint8 array of its stored shape."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise TransganError(f"{path}: cannot read ({error})") from error
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise TransganError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else ()
    if len(dims) != ndim or len(data) - header != int(np.prod(dims)):
        raise TransganError(f"{path}: size does not match its header; the file is truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx(folder: Path, prefix: str | None = None) -> list[Path]:
    """Idx image files (*-images-idx3-ubyte, optionally .gz) in folder whose name starts with prefix."""
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if IDX_IMAGES.match(p.name))
    return [p for p in found if prefix is None or p.name.startswith(prefix)]


class MnistIdxDataset(_ClassImages):
    """MNIST-style idx files (images + labels), held in memory; start/stop select a slice (8,000/2,000 split)."""

    def __init__(
        self,
        folder: str | Path,
        image_size: int = 28,
        start: int = 0,
        stop: int | None = None,
        prefix: str | None = None,
        channels: int = 1,
        flip: bool = False,
    ):
        self._check_size(image_size)
        self.folder = Path(folder)
        candidates = find_idx(self.folder, prefix)
        if not candidates:
            raise TransganError(
                f"{self.folder}: no *-images-idx3-ubyte(.gz) file" + (f" starting {prefix!r}" * bool(prefix))
            )
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise TransganError(f"{self.folder}: several idx image files ({names}); pass prefix='train' or 't10k'")
        images_path = candidates[0]
        base = IDX_IMAGES.match(images_path.name).group(1)
        label_paths = [
            p
            for p in self.folder.iterdir()
            if re.fullmatch(re.escape(base) + r"labels[-.]idx1[-.]ubyte(\.gz)?", p.name)
        ]
        if not label_paths:
            raise TransganError(f"{images_path}: no matching {base}labels-idx1-ubyte(.gz) file beside it")
        images, labels = read_idx(images_path), read_idx(min(label_paths))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise TransganError(
                f"{images_path}: expected N x H x W images and N labels, got {images.shape}, {labels.shape}"
            )
        stop = len(images) if stop is None else stop
        if not 0 <= start < stop <= len(images):
            raise TransganError(
                f"start={start}, stop={stop}: need 0 <= start < stop <= {len(images)} ({images_path.name})"
            )
        self.images = np.ascontiguousarray(images[start:stop])
        self.labels = [int(v) for v in labels[start:stop]]
        self.class_names = [str(k) for k in range(int(labels.max()) + 1)]
        self.image_size, self.channels, self.flip = image_size, check_channels(channels), flip
        self.skip = SkipBadImages(len(self.labels), str(images_path))

    def _load(self, index: int) -> Image.Image:
        return convert_image(Image.fromarray(self.images[index]), self.channels)


def class_dataset(
    path: str | Path,
    image_size: int,
    channels: int | None = None,
    split: str | None = None,
    flip: bool = False,
    start: int = 0,
    stop: int | None = None,
) -> ClassFolderDataset | ZipClassDataset | MnistIdxDataset:
    """Pick the class dataset by what path is: a .zip, a folder with idx files, or a folder of class folders.

    split names a sub-folder (zip prefix, folder, or idx file prefix like 'train'/'t10k');
    start/stop slice MNIST idx data only.
    """
    path = Path(path)
    if not path.exists():
        raise TransganError(
            f"{path}: not found; pass a folder of class sub-folders, a .zip of them, or an MNIST folder"
        )
    if path.is_file():
        if zipfile.is_zipfile(path):
            return ZipClassDataset(path, image_size, channels, split, flip)
        raise TransganError(f"{path}: not a zip file; pass a folder of class sub-folders, a .zip, or an MNIST folder")
    if find_idx(path):
        return MnistIdxDataset(path, image_size, start, stop, split, channels or 1, flip)
    if start != 0 or stop is not None:
        raise TransganError(f"{path}: start/stop only apply to MNIST idx data; split the class folders instead")
    return ClassFolderDataset(path / split if split else path, image_size, channels, flip)
