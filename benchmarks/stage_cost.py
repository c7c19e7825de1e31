"""Where the time goes, per image, for 1536-px JPEGs: decode, scan, zoom; scan-only vs scan+zoom.

    python benchmarks/stage_cost.py [--n 48] [--side 1536] [--model PATH] [--scan-batches]

One process (the plain chain, `zoomin_core.stages.run_chain`), torch's default threads. The
`decode` column is the reduced scan view (draft mode); `zoom` includes decoding the original at
full resolution to cut the crops. For the Ray job's end-to-end figures see pipeline_vs_loop.py.

--scan-batches: also the scan alone with the backend's CPU pass size (`CPU_SCAN_PIXELS` view
pixels per forward pass) against one pass per batch of 8 views, side by side.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402

from zoomin_core import ExamineConfig, ImageInput, load_backend, run_chain  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--side", type=int, default=1536)
    ap.add_argument("--model", default=None, help="compact weights (default: bundled)")
    ap.add_argument("--scan-batches", action="store_true", help="also compare the scan's CPU pass sizes")
    a = ap.parse_args()
    backend = load_backend("compact", a.model)
    with tempfile.TemporaryDirectory() as d:
        inputs = [ImageInput(str(p), p.read_bytes()) for p in large_jpegs(Path(d), a.n, a.side)]
    run_chain(backend, inputs[:2])  # warm-up
    print(f"{a.n} JPEGs, long side {a.side} px, {backend.model_id}, one process:")
    base = None
    for stages in ("scan", "scan,zoom"):
        t0 = time.perf_counter()
        rows = []
        for i in range(0, len(inputs), 8):
            rows += run_chain(backend, inputs[i:i + 8], ExamineConfig(stages=stages))
        total = (time.perf_counter() - t0) / len(inputs)
        assert all(r.status == "ok" for r in rows)
        base = base or total
        d, s, z = (np.mean([getattr(r, k) for r in rows]) * 1000 for k in ("decode_s", "scan_s", "zoom_s"))
        boxes = np.mean([len(r.boxes) for r in rows])
        print(f"  {stages:10s} {1 / total:6.2f} images/s  {total * 1000:6.1f} ms/image = decode {d:5.1f} + "
              f"scan {s:5.1f} + zoom {z:5.1f} ms  ({boxes:.1f} regions/image)  x{total / base:.2f} of scan only")
    if a.scan_batches:
        scan_passes(backend, inputs)


def scan_passes(backend, inputs) -> None:
    """The scan stage alone over decoded views, batches of 8, under two CPU pass sizes."""
    import zoomin_core.backends.compact as compact
    from zoomin_core.decode import prepare
    from zoomin_core.stages import scan_stage
    views = [prepare(i, ExamineConfig().decode) for i in inputs]
    budget = compact.CPU_SCAN_PIXELS
    h, w = views[0].view.pixels.shape[:2]
    rates = {}
    for name, pixels in ((f"passes of <= {budget} px ({max(1, budget // (h * w))} view(s) of {w}x{h})", budget),
                         ("one pass per batch of 8", 1 << 40)) * 2:   # twice, interleaved: noise
        compact.CPU_SCAN_PIXELS = pixels
        t0 = time.perf_counter()
        for i in range(0, len(views), 8):
            scan_stage(backend, views[i:i + 8])
        rates.setdefault(name, []).append(len(views) / (time.perf_counter() - t0))
    compact.CPU_SCAN_PIXELS = budget
    for name, r in rates.items():
        print(f"  scan only, {name:58s} {max(r):7.1f} views/s (best of {len(r)})")


if __name__ == "__main__":
    main()
