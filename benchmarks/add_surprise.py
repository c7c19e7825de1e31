"""What the real-photo second opinion (zoomin_core/surprise.py) changes for given weights: keep
their scan and zoom nets, add a real-photo model trained on the set's real `train` images,
calibrate again as `zoomin train` does (its head and the final score on the calib split) and
validate on `test` and `holdout`.

    python benchmarks/add_surprise.py --weights zoomin_core/weights/compact-v7.safetensors \
        --labels data/synth/labels.jsonl [--steps 1500] [--seed 0] [--out runs/v7-surprise.safetensors]

Prints the figures `zoomin train` stores, for the weights calibrated again on this set's calib
split, with and without the opinion, side by side: the nets and the calibration data are the
same, so the difference is the opinion's alone. The new weights go to --out (usable with
`zoomin scan --model`).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoomin_core.calibrate import calibrate, validate  # noqa: E402
from zoomin_core.compact_model import CompactModel  # noqa: E402
from zoomin_core.surprise import fit_blindspot  # noqa: E402
from zoomin_core.train import load_labelled  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="compact weights whose nets are kept")
    ap.add_argument("--labels", default="data/synth/labels.jsonl", help="the labelled set they were trained on")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of the real-photo model (default 1500)")
    ap.add_argument("--seed", type=int, default=0, help="its seed (default 0)")
    ap.add_argument("--out", default="runs/with-surprise.safetensors", help="the weights written")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    samples = load_labelled(a.labels)
    # The baseline is calibrated again on this set too: weights calibrated on another set (or
    # another draw of it) would differ by more than the opinion.
    baseline = CompactModel.load(a.weights)
    calibrate(baseline, samples)
    before = validate(baseline, samples)
    model = CompactModel.load(a.weights)
    model.surprise = fit_blindspot([s.full for s in samples if s.split == "train" and s.label == 0], a.steps, a.seed)
    calibrate(model, samples)
    after = validate(model, samples)
    model.meta.update(validation=after, version=f"{model.version}+surprise",
                      surprise_added={"from": a.weights, "steps": a.steps, "seed": a.seed})
    model.save(a.out)
    print(f"{time.perf_counter() - t0:.0f} s; weights: {a.out}")
    print(f"{'':32s} {'as given':>10s} {'+ surprise':>10s}   (both calibrated on this set's calib split)")
    for split in ("test", "holdout"):
        for key in sorted(set(before.get(split, {})) | set(after.get(split, {}))):
            b, c = before.get(split, {}).get(key), after.get(split, {}).get(key)
            cell = [f"{v:10.3f}" if isinstance(v, (int, float)) else f"{'-':>10s}" for v in (b, c)]
            print(f"{split + ' ' + key:32s} {cell[0]} {cell[1]}")


if __name__ == "__main__":
    main()
