"""What separates each generator family from real photos before any training: three statistics
of the whole high-pass residual (grey pixel minus its 3x3 mean), per source.

    python benchmarks/residual_stats.py [--labels data/synth/labels.jsonl] [--split test]

For the real and the wholly generated images of one split: log residual energy, the correlation
of horizontal neighbours in the residual, and the log share of the residual's energy at the
2-pixel period (its 512x512 top-left corner's spectrum). Means and spreads per source. A family
whose three figures sit where the real photos' do has no global trace for a model trained on the
other families to carry over (README, "Why `denoise` stays unseen").
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def residual_stats(grey: np.ndarray) -> tuple[float, float, float]:
    res = grey - ndimage.uniform_filter(grey, 3, mode="nearest")
    energy = float((res ** 2).mean())
    neighbours = float((res[:, 1:] * res[:, :-1]).mean() / energy)
    corner = res[:512, :512]
    spectrum = np.abs(np.fft.rfft2(corner)) ** 2
    h = corner.shape[0] // 2
    nyquist = spectrum[h, :].sum() + spectrum[:, -1].sum()   # the 2-pixel period, rows and columns
    return float(np.log(energy)), neighbours, float(np.log(nyquist / spectrum.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default="data/synth/labels.jsonl", help="labels.jsonl written by `zoomin synth`")
    ap.add_argument("--split", default="test", help="split to measure (default test)")
    a = ap.parse_args()
    root = Path(a.labels).parent
    by_source: dict[str, list] = defaultdict(list)
    for line in Path(a.labels).read_text().splitlines():
        r = json.loads(line)
        if r.get("split") != a.split or r.get("kind") == "regional":
            continue
        grey = np.asarray(Image.open(root / r["file"]).convert("L"), np.float64)
        by_source[r["source"]].append(residual_stats(grey))
    print(f"{'source':12s} {'images':>6s}  {'log energy':>14s}  {'neighbour corr.':>15s}  {'2-px period (log)':>17s}")
    for source in sorted(by_source, key=lambda s: (s != "real", s)):
        v = np.array(by_source[source])
        cells = "  ".join(f"{m:7.2f} ±{sd:5.2f}" for m, sd in zip(v.mean(0), v.std(0)))
        print(f"{source:12s} {len(v):6d}  {cells}")


if __name__ == "__main__":
    main()
