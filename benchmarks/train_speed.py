"""How fast `zoomin train` fits the two networks on each device, side by side.

    python benchmarks/train_speed.py --labels data/synth/labels.jsonl [--devices cpu,cuda]
        [--scan-steps 600] [--zoom-steps 300] [--limit 200] [--json FILE]

Loads the labelled set's train split once (at most --limit images), then trains the compact
detector on each device with the same seed and steps (`zoomin_core.train.train`, which is what
`zoomin train --device` runs). Prints, per device: ms per step of the scan and of the zoom net,
the share of that time spent making batches on the CPU (crops, patches, perturbations), the
whole fit, the speed-up over the first device, and the last logged losses' agreement (the same
batches on both devices: the nets should learn alike). The full recipe (3000 + 1500 steps) costs
scan ms/step x 3000 + zoom ms/step x 1500, plus loading and calibration.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoomin_core.compact_model import to_tensor  # noqa: E402
from zoomin_core.evaluate import roc_auc  # noqa: E402
from zoomin_core.train import TrainConfig, load_labelled, train  # noqa: E402


@torch.inference_mode()
def first_look_auc(model, samples) -> float:
    """ROC-AUC of the scan's highest cell logit over the samples' views (on the CPU)."""
    top = [float(model.scan(to_tensor(s.view)).max()) for s in samples]
    return roc_auc(np.array([s.label for s in samples]), np.array(top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True, help="labels.jsonl of a `zoomin synth` set")
    ap.add_argument("--devices", default="cpu,cuda", help="comma-separated torch devices (default cpu,cuda)")
    ap.add_argument("--scan-steps", type=int, default=600)
    ap.add_argument("--zoom-steps", type=int, default=300)
    ap.add_argument("--limit", type=int, default=200, help="train-split images to load at most (default 200)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    devices = a.devices.split(",")
    for d in devices:
        if torch.device(d).type == "cuda" and not torch.cuda.is_available():
            sys.exit(f"train_speed: --devices names {d}, but torch sees no CUDA GPU")

    t0 = time.perf_counter()
    samples = [s for s in load_labelled(a.labels) if s.split == "train"][: a.limit]
    print(f"{len(samples)} train images loaded in {time.perf_counter() - t0:.1f} s; "
          f"{a.scan_steps} scan + {a.zoom_steps} zoom steps per device, torch threads {torch.get_num_threads()}")
    cfg = TrainConfig(scan_steps=a.scan_steps, zoom_steps=a.zoom_steps)
    figures: dict = {"images": len(samples), "threads": torch.get_num_threads(), "devices": {}}
    for d in devices:
        if torch.device(d).type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model = train(samples, cfg, device=d)
        seconds = time.perf_counter() - t
        tm = model.meta["train_timing"]
        figures["devices"][d] = {
            "name": model.meta["train_device"], "seconds": round(seconds, 1),
            **{f"{net}_ms_per_step": round(1000 * tm[net]["seconds"] / max(tm[net]["steps"], 1), 2) for net in tm},
            **{f"{net}_batch_share": round(tm[net]["batch_seconds"] / max(tm[net]["seconds"], 1e-9), 3) for net in tm},
            "first_look_auc_on_train": round(first_look_auc(model, samples), 3),
        }
    base = figures["devices"][devices[0]]
    print(f"{'device':28s} {'scan ms/step':>12s} {'zoom ms/step':>12s} {'batches (scan/zoom)':>20s} "
          f"{'fit s':>7s} {'speed-up':>8s} {'AUC':>6s}")
    for d, f in figures["devices"].items():
        f["speedup_over_first"] = round(base["seconds"] / f["seconds"], 2)
        print(f"{d + ' (' + f['name'] + ')':28s} {f['scan_ms_per_step']:12.1f} {f['zoom_ms_per_step']:12.1f} "
              f"{f['scan_batch_share']:9.0%} / {f['zoom_batch_share']:<8.0%} {f['seconds']:7.1f} "
              f"{f['speedup_over_first']:7.2f}x {f['first_look_auc_on_train']:6.3f}")
    print(json.dumps(figures, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
