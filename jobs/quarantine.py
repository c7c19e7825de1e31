"""Isolating images that kill the model actor's process (a crash in native code, an
out-of-memory kill) rather than raising an exception.

Ray restarts a dead actor and retries its batch, forever. So before each call an actor writes
the ids of the images in flight to a small file on its node; a restarted actor (same actor id)
finds the file its predecessor left. Images in flight in a batch that died become suspects and
are examined one at a time; an image in flight alone when the process died is poison: it gets
a `model_error` row and is never examined again. The rest of its batch is scored.

Actors that read and decode their own images guard that step the same way, in a file of its
own and by input uri: an input whose decoding kills the process alone gets a `decode_error` row.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Hashable, Sequence

from zoomin_core.records import STATUS_MODEL_ERROR, ResultRow

POISON_MESSAGE = ("the model process died while examining this image alone, twice in a row counting "
                  "its batch (a crash in native code or an out-of-memory kill); it was not examined again")
POISON_DECODE_MESSAGE = ("the process died while decoding this input alone, twice in a row counting its batch "
                         "(a crash in native code or an out-of-memory kill); it was not decoded again")


def _actor_key() -> str:
    try:
        import ray
        aid = ray.get_runtime_context().get_actor_id()
    except Exception:  # noqa: BLE001 - outside Ray
        aid = None
    return aid or f"pid-{os.getpid()}"


class CrashGuard:
    def __init__(self, folder: str | None = None, step: str = ""):
        """step: names the guarded step's file apart when one actor guards two (decode, model)."""
        d = Path(folder or os.environ.get("ZOOMIN_INFLIGHT_DIR", Path(tempfile.gettempdir()) / "zoomin-inflight"))
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / f"{_actor_key()}{'-' + step if step else ''}.json"
        self.suspects: set[str] = set()
        self.poison: set[str] = set()
        if self.path.exists():  # a predecessor of this actor died with these in flight
            state = json.loads(self.path.read_text() or "{}")
            inflight = state.get("inflight", [])
            self.poison = set(state.get("poison", [])) | (set(inflight) if len(inflight) == 1 else set())
            self.suspects = (set(state.get("suspects", [])) | set(inflight)) - self.poison

    def _mark(self, ids: list[str]) -> None:
        if not (ids or self.poison or self.suspects):   # nothing to hand on: leave no file behind
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"inflight": ids, "poison": sorted(self.poison),
                                   "suspects": sorted(self.suspects)}))
        os.replace(tmp, self.path)

    def examine(self, prepared: Sequence, fn: Callable[[list], list], model: str, stages: str) -> list:
        """fn over `prepared` (Prepared, or stages.Scanned / finished rows between split stages),
        one result per input in order, keeping known poison away from fn."""
        return self.run(prepared, fn, lambda p: p.image_id,
                        lambda p: ResultRow.failed(getattr(p, "prepared", p), STATUS_MODEL_ERROR, POISON_MESSAGE,
                                                   model, stages))

    def run(self, items: Sequence, fn: Callable[[list], list], key: Callable[[object], Hashable],
            poisoned: Callable[[object], object]) -> list:
        """fn over `items`, one result per item in order: known poison gets `poisoned(item)`,
        suspects go through fn one at a time, the rest in one call."""
        rows: dict[int, object] = {}
        batch, alone = [], []
        for i, it in enumerate(items):
            if key(it) in self.poison:
                rows[i] = poisoned(it)
            elif key(it) in self.suspects:
                alone.append(i)
            else:
                batch.append(i)
        for group in [[i] for i in alone] + ([batch] if batch else []):
            self._mark([key(items[i]) for i in group])
            for i, r in zip(group, fn([items[i] for i in group])):
                rows[i] = r
            self.suspects -= {key(items[i]) for i in group}
        self._mark([])
        return [rows[i] for i in range(len(items))]
