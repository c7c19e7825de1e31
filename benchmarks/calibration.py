"""Calibration of compact weights per split of a labelled set, against what sampling alone gives.

    python benchmarks/calibration.py [--labels data/synth/labels.jsonl] [--weights PATH] [--draws 500]

For each split: images, accuracy, ECE (10 bins), and the ECE a perfectly calibrated model with
the same scores would show at that size (mean and 95th percentile over label sets drawn from the
scores), then a 5-bin reliability table (images, mean score, share generated). One process,
the same chain the job runs (`calibrate.run_samples`).
"""
from __future__ import annotations

import argparse

import numpy as np

from zoomin_core.calibrate import run_samples
from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel
from zoomin_core.evaluate import ece, ece_floor
from zoomin_core.train import load_labelled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--labels", default="data/synth/labels.jsonl", help="labels.jsonl written by `zoomin synth`")
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="compact weights (default: bundled)")
    ap.add_argument("--draws", type=int, default=500, help="label draws for the floor (default 500)")
    a = ap.parse_args()
    model = CompactModel.load(a.weights)
    samples = load_labelled(a.labels, None, None)
    for split in ("calib", "test", "holdout"):
        chosen = [s for s in samples if s.split == split]
        if not chosen:
            continue
        y = np.array([s.label for s in chosen], dtype=np.float64)
        sc = np.array([r.score for r in run_samples(model, chosen)])
        print(f"{split:8s} images {len(chosen):4d}  accuracy {((sc >= 0.5) == (y == 1)).mean():.3f}  "
              f"ECE {ece(y, sc):.3f}  perfectly calibrated: {ece_floor(sc, draws=a.draws):.3f} "
              f"(p95 {ece_floor(sc, draws=a.draws, q=0.95):.3f})", flush=True)
        idx = np.minimum((sc * 5).astype(int), 4)
        for b in range(5):
            m = idx == b
            if m.any():
                print(f"           scores {b / 5:.1f}-{(b + 1) / 5:.1f}: {int(m.sum()):4d} images, "
                      f"mean score {sc[m].mean():.2f}, generated {y[m].mean():.2f}")


if __name__ == "__main__":
    main()
