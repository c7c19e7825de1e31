"""Sources: turn SRC into a list of (uri, size) entries, and read one entry's bytes.

Only keys and sizes travel through the driver; bytes are read inside the Ray tasks. A file's
content decides whether it is an image, never its extension, so every regular file under SRC is
an input (hidden files and folders - names starting with "." - are skipped, and so is the
job's own output folder if it lies under SRC).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from zoomin_core.records import STATUS_TOO_LARGE, ImageInput

SAMPLES_DIR = Path(__file__).parent / "samples"


@dataclass(frozen=True)
class SourceItem:
    uri: str
    size: int


class SourceError(Exception):
    """SRC itself is unusable (missing, unsupported scheme): the job cannot start."""


def _is_hidden(path: Path, root: Path) -> bool:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return any(part.startswith(".") for part in rel.parts)


def list_source(src: str, exclude: Optional[str] = None) -> list[SourceItem]:
    """Local folder (recursive), glob pattern, or single file -> sorted SourceItems."""
    if "://" in src and not src.startswith("file://"):
        raise SourceError(f"{src}: only local paths are supported by this version of `zoomin scan`")
    src = src.removeprefix("file://")
    excluded = Path(exclude).resolve() if exclude else None
    if any(ch in src for ch in "*?["):
        paths = [Path(p) for p in glob.glob(src, recursive=True)]
        root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")
    else:
        root = Path(src)
        if not root.exists():
            raise SourceError(f"{src}: no such file or folder")
        paths = [root] if root.is_file() else [p for p in root.rglob("*")]
    items = []
    for p in paths:
        if not p.is_file() or _is_hidden(p, root if root.is_dir() else p.parent):
            continue
        rp = p.resolve()
        if excluded is not None and (rp == excluded or excluded in rp.parents):
            continue
        items.append(SourceItem(str(rp), rp.stat().st_size))
    return sorted(items, key=lambda it: it.uri)


def read_input(uri: str, max_bytes: int) -> ImageInput:
    """The file as an ImageInput; a per-file problem becomes its read_error, never an exception."""
    try:
        size = os.path.getsize(uri)
        if size > max_bytes:
            return ImageInput(uri, None, f"file is {size:,} bytes, over the {max_bytes:,}-byte "
                              "read limit (raise --max-bytes to accept it)", STATUS_TOO_LARGE)
        with open(uri, "rb") as f:
            return ImageInput(uri, f.read())
    except OSError as e:
        return ImageInput(uri, None, f"cannot read file: {e.strerror or e}")
