"""Detector quality: leave-one-generator-family-out, calibration, what zooming earns, shortcuts.

    python benchmarks/quality.py --data data/synth [--out runs/quality] [--families all] [--held-out-only]
                                 [--seed 0]

With a `zoomin synth` set in --data (made first if missing):
1. For each generator family F: train on every other family (train split), calibrate on the
   calib split without F, and test on F's fakes plus real images, from the test and holdout
   splits (holdout = photos never used for any training). Results go through `zoomin evaluate`.
2. The model trained on all families (what ships): the in-distribution test split (ECE), and
   the held-out photos.
3. For every model: the same images with `--stages scan` (first look only) against
   `scan,zoom`: accuracy on regional fakes and seconds per image of each.
4. Shortcut check: how well one global statistic (Laplacian variance = sharpness, 3x3 residual
   energy = high-frequency energy) separates each kind of fake from real images (ROC-AUC, the
   better direction), against the detector.
Prints one table per step; writes every report under --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from jobs.evaluate import format_report, run_evaluate
from zoomin_core.calibrate import calibrate, run_samples
from zoomin_core.compact_model import CompactModel
from zoomin_core.decode import DecodeConfig
from zoomin_core.evaluate import roc_auc
from zoomin_core.generators import FAMILIES
from zoomin_core.schema import rows_to_table
from zoomin_core.synth import SynthConfig, synthesize
from zoomin_core.train import TrainConfig, load_labelled, train


def global_stats(view: np.ndarray) -> tuple[float, float]:
    g = view.astype(np.float64).mean(axis=2)
    lap = g[1:-1, 1:-1] * 4 - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    p = np.pad(g, 1, mode="edge")
    mean3 = sum(p[dy:dy + g.shape[0], dx:dx + g.shape[1]] for dy in range(3) for dx in range(3)) / 9
    return float(lap.var()), float(np.mean((g - mean3) ** 2))


def best_auc(y: np.ndarray, s: np.ndarray) -> float:
    a = roc_auc(y, s)
    return max(a, 1 - a) if a is not None else float("nan")


def evaluate_model(model, samples, out: Path, labels_path: Path) -> dict:
    """Scan+zoom and scan-only runs of `samples`; reports from `zoomin evaluate`."""
    out.mkdir(parents=True, exist_ok=True)
    labels = {r["file"]: r for r in map(json.loads, labels_path.read_text().splitlines())}
    root = labels_path.parent
    with open(out / "labels.jsonl", "w") as f:
        for s in samples:
            rec = dict(labels[str(Path(s.file).relative_to(root))])
            rec["uri"] = s.file
            f.write(json.dumps(rec) + "\n")
    res: dict = {"scores": {}}
    for stages in ("scan,zoom", "scan"):
        t0 = time.perf_counter()
        rows = run_samples(model, samples, stages)
        seconds = (time.perf_counter() - t0) / len(samples)
        folder = out / stages.replace(",", "_")
        folder.mkdir(exist_ok=True)
        import pyarrow.parquet as pq
        pq.write_table(rows_to_table(rows), folder / "part-0.parquet")
        text = run_evaluate(str(folder), str(out / "labels.jsonl"), json_out=str(folder / "report.json"))
        (folder / "report.txt").write_text(text)
        res[stages] = json.loads((folder / "report.json").read_text())
        res[stages]["seconds_per_image"] = seconds
        res["scores"][stages] = [r.score if r.score is not None else 0.5 for r in rows]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a `zoomin synth` folder (made if missing)")
    ap.add_argument("--out", default="runs/quality", help="where reports go")
    ap.add_argument("--families", default="all", help="families to hold out, comma-separated, or 'all'")
    ap.add_argument("--scan-steps", type=int, default=TrainConfig.scan_steps)
    ap.add_argument("--zoom-steps", type=int, default=TrainConfig.zoom_steps)
    ap.add_argument("--seed", type=int, default=TrainConfig.seed,
                    help="training seed of every model trained here (runs differing only in it show the "
                         "spread of one recipe; benchmarks/ensemble.py averages their scores)")
    ap.add_argument("--weights", default=None,
                    help="the all-families model to evaluate (e.g. the shipped weights, made by `zoomin train` "
                         "on the same set); default: train it here")
    ap.add_argument("--view-size", type=int, default=DecodeConfig.view_max_side,
                    help="longest side of the scan view the models learn on and are scored with "
                         f"(`zoomin train --view-size`; default {DecodeConfig.view_max_side})")
    ap.add_argument("--held-out-only", action="store_true",
                    help="only the leave-one-family-out models: no all-families model, in-distribution or "
                         "shortcut steps")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data, out = Path(a.data), Path(a.out)
    labels_path = data / "labels.jsonl"
    if not labels_path.exists():
        synthesize(data, SynthConfig())
    cfg = TrainConfig(scan_steps=a.scan_steps, zoom_steps=a.zoom_steps, seed=a.seed)
    t0 = time.perf_counter()
    everything = load_labelled(str(labels_path), decode=DecodeConfig(view_max_side=a.view_size))
    print(f"loaded {len(everything)} images in {time.perf_counter() - t0:.0f}s", flush=True)
    present = {s.source for s in everything} - {"real"}   # the families this set was made with
    families = ([f for f in FAMILIES if f in present] if a.families == "all" else a.families.split(","))
    evaluation = [s for s in everything if s.split in ("test", "holdout")]
    summary = {}
    models = families + ([] if a.held_out_only else ["none"])
    for held in models:
        t0 = time.perf_counter()
        fit_set = [s for s in everything if not (s.source == held and s.split in ("train", "calib"))]
        if held == "none" and a.weights:
            model = CompactModel.load(a.weights)
        else:
            model = train(fit_set, cfg, {"version": f"without-{held}", "view_size": a.view_size})
            calibrate(model, fit_set)
            if held != "none":  # kept, so that later figures need no retraining
                model.save(out / f"without-{held}.safetensors")
        if held == "none":
            test = evaluation
            shipped = model
            model.save(out / "all-families.safetensors")
        else:
            test = [s for s in evaluation if s.label == 0 or s.source == held]
        res = evaluate_model(model, test, out / f"without-{held}", labels_path)
        summary[held] = res
        m = res["scan,zoom"]["overall"]
        reg, regs = res["scan,zoom"]["kind"].get("regional", {}), res["scan"]["kind"].get("regional", {})
        real = res["scan,zoom"]["kind"].get("real", {})
        print(f"held out {held:10s}: AUC {m.get('roc_auc', 0):.3f}  acc {m['accuracy']:.3f}  ECE {m['ece']:.3f}  "
              f"real acc {real.get('accuracy', 0):.3f}  regional acc {reg.get('accuracy', 0):.3f} (scan only {regs.get('accuracy', 0):.3f})  "
              f"region recall {m.get('region_recall') or 0:.3f}  IoU {m.get('mean_iou') or 0:.3f}  "
              f"s/img {res['scan,zoom']['seconds_per_image']:.3f} (scan only {res['scan']['seconds_per_image']:.3f})"
              f"  [{time.perf_counter() - t0:.0f}s]", flush=True)
        print(format_report(res["scan,zoom"]), flush=True)

    held = [summary[f]["scan,zoom"]["overall"] for f in families]
    print("\nleave-one-family-out average: AUC %.3f, accuracy %.3f, region recall %.3f, ECE %.3f" % (
        np.mean([m["roc_auc"] for m in held]), np.mean([m["accuracy"] for m in held]),
        np.mean([m.get("region_recall") or 0 for m in held]), np.mean([m["ece"] for m in held])))
    reg_gain = [summary[f]["scan,zoom"]["kind"]["regional"]["accuracy"] - summary[f]["scan"]["kind"]["regional"]["accuracy"]
                for f in models]
    cost = [summary[f]["scan,zoom"]["seconds_per_image"] / summary[f]["scan"]["seconds_per_image"] for f in models]
    print("zoom vs scan only on regional fakes: %+.1f accuracy points on average (per model: %s); time ratio %.2fx" % (
        100 * np.mean(reg_gain), ", ".join(f"{100 * g:+.1f}" for g in reg_gain), np.mean(cost)))

    if a.held_out_only:
        _write_summary(summary, out)
        return

    # In distribution: the all-families model on the test split alone (ECE target).
    test_items = [s for s in evaluation if s.split == "test"]
    ind = evaluate_model(shipped, test_items, out / "in-distribution", labels_path)
    m = ind["scan,zoom"]["overall"]
    print(f"in-distribution test split (all families): AUC {m['roc_auc']:.3f}  accuracy {m['accuracy']:.3f}  "
          f"ECE {m['ece']:.3f} (a perfectly calibrated model: {m['ece_floor']:.3f} at {m['images']} images)  "
          f"region recall {m.get('region_recall') or 0:.3f}", flush=True)

    # Shortcut check on the in-distribution test images.
    rows = ["shortcut check: ROC-AUC against the real images of the test split (global statistics in "
            "their better direction):"]
    scores = np.array(ind["scores"]["scan,zoom"])
    for kind in ("whole", "regional"):
        idx = [i for i, s in enumerate(test_items) if s.label == 0 or s.kind == kind]
        y = np.array([test_items[i].label for i in idx])
        stats = np.array([global_stats(test_items[i].view) for i in idx])
        rows.append(f"  {kind:9s} sharpness {best_auc(y, stats[:, 0]):.3f}   high-frequency energy "
                    f"{best_auc(y, stats[:, 1]):.3f}   detector {roc_auc(y, scores[idx]):.3f}")
    print("\n".join(rows))
    _write_summary(summary, out)


def _write_summary(summary: dict, out: Path) -> None:
    for res in summary.values():
        res.pop("scores", None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
