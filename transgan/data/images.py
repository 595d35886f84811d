"""Datasets' side of unreadable images: skip them so training goes on (what an image is: transgan.images)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

from transgan.errors import TransganError
from transgan.images import BadImageWarning, UnreadableImage

T = TypeVar("T")


class SkipBadImages:
    """Stand in for unreadable samples so training goes on: warn once per file, use the next readable index.

    The replacement depends only on the index and on which files are unreadable, so it is deterministic.
    Each worker process keeps its own record, so a file may be reported once per worker.
    """

    def __init__(self, count: int, what: str):
        self.count = count
        self.what = what
        self.bad_indices: set[int] = set()
        self.warned: set[str] = set()

    def __call__(self, index: int, read: Callable[[int], T]) -> T:
        """read(index), or read of the next index that decodes when index's file is unreadable."""
        for step in range(self.count):
            candidate = (index + step) % self.count
            if candidate in self.bad_indices:
                continue
            try:
                return read(candidate)
            except UnreadableImage as error:
                self.bad_indices.add(candidate)
                if error.path not in self.warned:
                    self.warned.add(error.path)
                    warnings.warn(f"skipping unreadable image {error.path}: {error.reason}", BadImageWarning, 2)
        raise TransganError(f"{self.what}: none of its {self.count} images could be read; check the files")
