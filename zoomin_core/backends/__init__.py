"""The backend protocol and the table of backends, chosen by name, imported lazily.

A backend runs the two stages of the method on batches:
  scan(views)  -> one ScanResult per view: regions in VIEW pixels, first verdict, explanation
  zoom(items)  -> one Verdict per item: item = (view, crops cut from the full-resolution
                  original, the item's ScanResult); final verdict, score, rationale
Everything else (decoding, mapping boxes to original pixels, padding and cutting crops, error
rows) is done once for all backends in `zoomin_core.stages`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional, Protocol, Sequence

from ..records import Crop, ScanResult, Verdict, View


class Backend(Protocol):
    name: str

    @property
    def model_id(self) -> str:
        """Name and version of the model, written into every output row."""

    def scan(self, views: Sequence[View]) -> list[ScanResult]: ...

    def zoom(self, items: Sequence[tuple[View, Sequence[Crop], ScanResult]]) -> list[Verdict]: ...


# name -> "module:Class". Imports happen only when a backend is chosen, so `compact` never pulls
# in transformers and `fake` needs nothing but numpy; `vlm` and `classifier` need transformers
# (the `vlm` extra).
BACKENDS: dict[str, str] = {
    "classifier": "zoomin_core.backends.classifier:ClassifierBackend",
    "compact": "zoomin_core.backends.compact:CompactBackend",
    "fake": "zoomin_core.backends.fake:FakeBackend",
    "vlm": "zoomin_core.backends.vlm:VLMBackend",
}
# The default backend's bundled weights, named here rather than in compact_model (which imports
# torch): a scan's driver names them in the run's identity and never needs torch itself.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "compact-v9.safetensors"
# Deterministic doubles for tests and dry runs: loadable by name, never offered to users.
TEST_DOUBLES = ("fake",)


def available() -> list[str]:
    """The backends a user chooses from."""
    return sorted(b for b in BACKENDS if b not in TEST_DOUBLES)


def load_backend(name: str, model: Optional[str] = None, **options) -> Backend:
    """Instantiate backend `name` with weights from `model` (None: the backend's default)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(available())}") from None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(model=model, **options)
