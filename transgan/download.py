"""Resumable downloads: a .part file grows until complete, is checked (size, sha256), then renamed."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from transgan.errors import TransganError

CHUNK = 1 << 16


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: Path, sha256: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `destination`, going on from a partial earlier attempt when the server allows it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the partial file is already complete
            response = None
        else:
            raise TransganError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise TransganError(f"cannot reach {url} ({getattr(error, 'reason', error)}); check the network") from error
    if response is not None:
        with response:
            resumed = getattr(response, "status", 200) == 206
            if not resumed:
                have = 0  # the server sent the whole file: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with partial.open("ab" if resumed else "wb") as out, Progress(*columns, disable=not progress) as bar:
                task = bar.add_task(destination.name, total=total, completed=have)
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.advance(task, len(block))
            received = partial.stat().st_size
            if total is not None and received != total:
                raise TransganError(
                    f"download of {url} stopped at {received} of {total} bytes; run the command again to continue"
                )
    if sha256 and sha256_of(partial) != sha256:
        partial.unlink()
        raise TransganError(f"{url}: the downloaded file's sha256 does not match the index; it was removed")
    os.replace(partial, destination)
    return destination
