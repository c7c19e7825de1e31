"""JPEG scan-view decoding: draft mode (DCT scaling) versus full decode then resize.

    python benchmarks/decode_draft.py [--n 20] [--side 4000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402

from zoomin_core.decode import DecodeConfig, prepare  # noqa: E402
from zoomin_core.records import ImageInput  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20, help="number of images")
    ap.add_argument("--side", type=int, default=4000, help="long side of each JPEG in pixels")
    ap.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        datas = [p.read_bytes() for p in large_jpegs(Path(d), a.n, a.side)]
    results = {}
    for name, draft in (("draft", True), ("full+resize", False)):
        cfg = DecodeConfig(draft=draft)
        best = float("inf")
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            for i, data in enumerate(datas):
                assert prepare(ImageInput(str(i), data), cfg).status == "ok"
            best = min(best, time.perf_counter() - t0)
        results[name] = best / len(datas)
    print(f"scan-view decode of {a.n} JPEGs, long side {a.side} px, view {DecodeConfig.view_max_side} px "
          f"(best of {a.repeat}):")
    for name, s in results.items():
        print(f"  {name:12s} {s * 1000:8.1f} ms/image  {1 / s:7.1f} images/s")
    print(f"  speed-up of draft mode: {results['full+resize'] / results['draft']:.1f}x")


if __name__ == "__main__":
    main()
