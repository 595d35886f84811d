"""Fetch a released reference checkpoint listed in pretrained/index.json and convert it to a model file."""

from __future__ import annotations

from pathlib import Path

from transgan.checkpoint import save
from transgan.convert import load_reference_checkpoint
from transgan.download import download
from transgan.errors import TransganError
from transgan.models import cache_dir, pretrained_index


def fetch_pretrained(name: str, url: str | None = None, progress: bool = True) -> Path:
    """Download (resumable) the entry's .pth, load it strictly into its architecture (the key-layout check),
    and write `cache_dir()/NAME.safetensors`; the .pth is removed once converted."""
    index = pretrained_index()
    if name not in index:
        raise TransganError(f"no pretrained model '{name}'; known: {', '.join(sorted(index))}")
    entry = index[name]
    if "file" in entry:
        raise TransganError(f"'{name}' ships with transgan; use it directly, nothing to download")
    target = cache_dir() / f"{name}.safetensors"
    source = download(url or entry["url"], cache_dir() / f"{name}.pth", sha256=entry.get("sha256"), progress=progress)
    net = load_reference_checkpoint(source, entry["arch"], **entry.get("config", {}))
    extra = {key: net.transgan_config[key] for key in ("input_nc", "output_nc")}
    save({"G": net}, target, task=entry["task"], directions={entry.get("direction", "AtoB"): "G"}, extra=extra)
    source.unlink()
    return target
