"""Image-pair datasets: aligned A|B images, A/ and B/ folders matched by name, and unaligned A and B folders."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from transgan.data.images import SkipBadImages
from transgan.data.transforms import BICUBIC, Preprocess, split_key, to_tensor
from transgan.errors import TransganError
from transgan.images import UnreadableImage, convert_image, list_images, load_image

DIRECTIONS = ("AtoB", "BtoA")


def _check_options(direction: str, input_nc: int, output_nc: int) -> None:
    if direction not in DIRECTIONS:
        raise TransganError(f"direction {direction!r}: use 'AtoB' or 'BtoA'")
    for name, value in (("input_nc", input_nc), ("output_nc", output_nc)):
        if value not in (1, 3):
            raise TransganError(f"{name}={value}: must be 1 (grayscale) or 3 (RGB)")


def _check_index(index: int, length: int, what: str) -> None:
    if not 0 <= index < length:
        raise IndexError(f"{what}: index {index} out of range for {length} samples")


def _sample(A: Image.Image, B: Image.Image, A_path: Path, B_path: Path) -> dict[str, torch.Tensor | str]:
    return {"A": to_tensor(A), "B": to_tensor(B), "A_path": str(A_path), "B_path": str(B_path)}


class AlignedDataset(Dataset):
    """The reference's aligned format: each file holds A (left half) and B (right half) side by side.

    Item "A" is always the network input (input_nc channels): with direction 'BtoA' the halves swap.
    """

    def __init__(
        self,
        root: str | Path,
        preprocess: Preprocess | None = None,
        direction: str = "AtoB",
        input_nc: int = 3,
        output_nc: int = 3,
    ):
        _check_options(direction, input_nc, output_nc)
        self.root = Path(root)
        self.preprocess, self.direction = preprocess or Preprocess(), direction
        self.input_nc, self.output_nc = input_nc, output_nc
        self.files = list_images(self.root)
        self.skip = SkipBadImages(len(self.files), str(self.root))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor | str]:
        index, seed = split_key(key)
        _check_index(index, len(self), str(self.root))
        return self.skip(index, lambda i: self._read(i, seed))

    def _read(self, index: int, seed: int) -> dict[str, torch.Tensor | str]:
        rng = random.Random(seed)
        path = self.files[index]
        AB = load_image(path, 3)
        w, h = AB.size
        if w < 2:
            raise UnreadableImage(str(path), f"{w} px wide, too narrow to hold A and B side by side")
        A, B = AB.crop((0, 0, w // 2, h)), AB.crop((w // 2, 0, w, h))
        if self.direction == "BtoA":
            A, B = B, A
        # Channel conversion before resizing, like the reference's Grayscale-first transform.
        A, B = convert_image(A, self.input_nc), convert_image(B, self.output_nc)
        params = self.preprocess.get_params(A.size, rng)
        return _sample(self.preprocess.apply(A, params), self.preprocess.apply(B, params), path, path)


def _by_name(files: list[Path], folder: Path) -> dict[str, Path]:
    """Relative path without extension -> file, so A/1.png pairs with B/1.jpg."""
    named: dict[str, Path] = {}
    for path in files:
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in named:
            raise TransganError(f"{folder}: {named[key].name} and {path.name} have the same name; keep only one")
        named[key] = path
    return named


def _examples(names: list[str], count: int = 3) -> str:
    shown = ", ".join(names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


class PairedFoldersDataset(Dataset):
    """Pairs from root/A and root/B: files with the same relative path and stem form a pair.

    Item "A" is always the network input (input_nc channels): with direction 'BtoA' the folders swap.
    """

    def __init__(
        self,
        root: str | Path,
        preprocess: Preprocess | None = None,
        direction: str = "AtoB",
        input_nc: int = 3,
        output_nc: int = 3,
    ):
        _check_options(direction, input_nc, output_nc)
        self.root = Path(root)
        self.preprocess, self.direction = preprocess or Preprocess(), direction
        self.input_nc, self.output_nc = input_nc, output_nc
        a_named = _by_name(list_images(self.root / "A"), self.root / "A")
        b_named = _by_name(list_images(self.root / "B"), self.root / "B")
        common = sorted(a_named.keys() & b_named.keys())
        only_a = [a_named[k].relative_to(self.root).as_posix() for k in sorted(a_named.keys() - b_named.keys())]
        only_b = [b_named[k].relative_to(self.root).as_posix() for k in sorted(b_named.keys() - a_named.keys())]
        if not common:
            raise TransganError(
                f"{self.root}: no file in A/ has a partner in B/ with the same name "
                f"(A/ has {_examples(only_a)}; B/ has {_examples(only_b)}); name pairs alike, e.g. A/1.png and B/1.jpg"
            )
        if only_a or only_b:
            unmatched = only_a + only_b
            warnings.warn(
                f"{self.root}: {len(unmatched)} files have no partner and are ignored: {_examples(unmatched)}",
                stacklevel=2,
            )
        self.pairs = [(a_named[k], b_named[k]) for k in common]
        self.skip = SkipBadImages(len(self.pairs), str(self.root))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor | str]:
        index, seed = split_key(key)
        _check_index(index, len(self), str(self.root))
        return self.skip(index, lambda i: self._read(i, seed))

    def _read(self, index: int, seed: int) -> dict[str, torch.Tensor | str]:
        rng = random.Random(seed)
        A_path, B_path = self.pairs[index]
        if self.direction == "BtoA":
            A_path, B_path = B_path, A_path
        A, B = load_image(A_path, self.input_nc), load_image(B_path, self.output_nc)
        if B.size != A.size:
            B = B.resize(A.size, BICUBIC)  # one crop position must land on the same content in both
        params = self.preprocess.get_params(A.size, rng)
        return _sample(self.preprocess.apply(A, params), self.preprocess.apply(B, params), A_path, B_path)


def paired_dataset(
    root: str | Path,
    preprocess: Preprocess | None = None,
    direction: str = "AtoB",
    input_nc: int = 3,
    output_nc: int = 3,
) -> AlignedDataset | PairedFoldersDataset:
    """PairedFoldersDataset when root has A/ and B/ sub-folders, else AlignedDataset (A|B side by side).

    preprocess defaults to Preprocess() (resize to 286, random 256 crop, flip), as in all pair datasets.
    """
    root = Path(root)
    if (root / "A").is_dir() and (root / "B").is_dir():
        return PairedFoldersDataset(root, preprocess, direction, input_nc, output_nc)
    return AlignedDataset(root, preprocess, direction, input_nc, output_nc)


class UnalignedDataset(Dataset):
    """Two unpaired folders (CycleGAN): A cycles through its folder, B is drawn at random from the seed.

    Length is the larger folder's size, like the reference. With direction 'BtoA' the folders swap, so item
    "A" is always the network input. A and B get independent crops and flips.
    """

    def __init__(
        self,
        dir_a: str | Path,
        dir_b: str | Path,
        preprocess: Preprocess | None = None,
        direction: str = "AtoB",
        input_nc: int = 3,
        output_nc: int = 3,
        serial_batches: bool = False,
    ):
        _check_options(direction, input_nc, output_nc)
        if direction == "BtoA":
            dir_a, dir_b = dir_b, dir_a
        self.dir_a, self.dir_b = Path(dir_a), Path(dir_b)
        self.preprocess, self.direction = preprocess or Preprocess(), direction
        self.input_nc, self.output_nc = input_nc, output_nc
        self.serial_batches = serial_batches
        self.files_a, self.files_b = list_images(self.dir_a), list_images(self.dir_b)
        self.skip_a = SkipBadImages(len(self.files_a), str(self.dir_a))
        self.skip_b = SkipBadImages(len(self.files_b), str(self.dir_b))

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor | str]:
        index, seed = split_key(key)
        _check_index(index, len(self), f"{self.dir_a} + {self.dir_b}")
        rng = random.Random(seed)
        # serial_batches pairs A and B in order (reproducible tests); otherwise B is random, as in the reference.
        b_index = index % len(self.files_b) if self.serial_batches else rng.randint(0, len(self.files_b) - 1)
        A, A_path = self.skip_a(index % len(self.files_a), lambda i: self._load(self.files_a[i], self.input_nc))
        A = self.preprocess(A, rng)
        B, B_path = self.skip_b(b_index, lambda i: self._load(self.files_b[i], self.output_nc))
        B = self.preprocess(B, rng)
        return _sample(A, B, A_path, B_path)

    @staticmethod
    def _load(path: Path, channels: int) -> tuple[Image.Image, Path]:
        return load_image(path, channels), path
