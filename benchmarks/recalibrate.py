"""Calibrate existing compact weights again on a labelled set, keeping their networks: the first
look, the region scores, the final score's zoom weight and the boxes settings are fitted on its
'calib' split (zoomin_core/calibrate.py), then the 'test' and 'holdout' splits are scored and the
figures stored in the weights. compact-v8 is compact-v7's networks calibrated this way (v7 is an
earlier release's file, kept in the repository's history; the shipped v9 is v8 with an archive
operating point added by benchmarks/operating_point.py):

    zoomin synth --out data/synth
    git show fa7e763:zoomin_core/weights/compact-v7.safetensors > compact-v7.safetensors
    python benchmarks/recalibrate.py --weights compact-v7.safetensors --keep scan_calibration,boxes \\
        --labels data/synth/labels.jsonl --out compact-v8.safetensors --version v8

v7's first look and boxes were fitted on the calib split of the set v7 learned on; a set made
again has the same real photos but other fakes, and fitting those two again on it moved them
(measured: held-out real photos called real 0.485 -> 0.299 with everything refitted). So only
what is new in v8 - the region scores' calibration and the zoom's weight - is fitted here.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoomin_core.calibrate import calibrate, validate  # noqa: E402
from zoomin_core.compact_model import CompactModel  # noqa: E402
from zoomin_core.decode import DecodeConfig  # noqa: E402
from zoomin_core.train import load_labelled  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="compact weights whose networks are kept")
    ap.add_argument("--labels", required=True, help="labels.jsonl of a `zoomin synth` set (its calib split fits)")
    ap.add_argument("--out", required=True, help="weights file to write")
    ap.add_argument("--version", required=True, help="version recorded in the weights and every row")
    ap.add_argument("--keep", default="", metavar="NAMES",
                    help="comma-separated calibration parameters the weights keep as they are: scan_calibration "
                         "(the first look), boxes (the map -> boxes setting); the rest is fitted (default: none)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model = CompactModel.load(a.weights)
    view = int(model.meta.get("view_size", DecodeConfig.view_max_side))
    t0 = time.perf_counter()
    # Only the splits used here are decoded (the train split's full-resolution pixels would take
    # gigabytes): their lines go to a file beside the labels, whose paths are relative to it.
    subset = Path(a.labels).parent / ".recalibrate-labels.jsonl"
    lines = [ln for ln in Path(a.labels).read_text().splitlines()
             if ln.strip() and json.loads(ln).get("split") in ("calib", "test", "holdout")]
    subset.write_text("\n".join(lines) + "\n")
    try:
        samples = load_labelled(str(subset), decode=DecodeConfig(view_max_side=view))
    finally:
        subset.unlink()
    before = model.meta.get("validation")
    calibrate(model, samples, keep=tuple(k for k in a.keep.split(",") if k))
    model.meta.update(version=a.version, recalibrated_from=Path(a.weights).name,
                      validation=validate(model, samples))
    model.save(a.out)
    print(json.dumps({"weights": a.out, "seconds": round(time.perf_counter() - t0),
                      **{k: model.meta[k] for k in ("scan_calibration", "zoom_calibration", "zoom_weight",
                                                    "cue_auc", "boxes")},
                      "validation_before": before, "validation": model.meta["validation"]}, indent=1))


if __name__ == "__main__":
    main()
