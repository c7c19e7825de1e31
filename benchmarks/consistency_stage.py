"""What `zoomin scan --consistency` changes: the same detector with and without the check.

    python benchmarks/consistency_stage.py --labels data/synth/labels.jsonl [--weights W]
        [--consistency C] [--splits test,holdout] [--out runs/consistency-stage]

Each split's images go through the job's chain (`run_chain`, in this process, batches of 8)
twice: `scan,zoom` as it ships, then with the self-consistency check, whose strongest region
joins the crops the zoom reads and whose score fills the `consistency` column. Printed side by
side per split: accuracy (all / real / regional / whole, and regional per family), ROC-AUC and
ECE of the final score, region recall at IoU 0.5 and mean box IoU on regional fakes, seconds per
image; and the `consistency` score's own ROC-AUC, regional fakes (per family) against real.

With `--weights` a detector trained without a family (`zoomin train --exclude-source F`), the
rows of family F are what the check adds where the detector has never seen the generator.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoomin_core.backends.compact import CompactBackend  # noqa: E402
from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel  # noqa: E402
from zoomin_core.consistency import DEFAULT_CONSISTENCY, ConsistencyModel  # noqa: E402
from zoomin_core.decode import DecodeConfig  # noqa: E402
from zoomin_core.evaluate import Item, metrics, roc_auc  # noqa: E402
from zoomin_core.records import ImageInput  # noqa: E402
from zoomin_core.stages import ExamineConfig, run_chain  # noqa: E402


def scan(backend, cue, labels, root: Path, consistency: bool) -> tuple[list, float]:
    cfg = ExamineConfig(decode=DecodeConfig(view_max_side=backend.view_size),
                        consistency="on" if consistency else None)
    rows, t0 = [], time.perf_counter()
    for i in range(0, len(labels), 8):
        inputs = [ImageInput(r["file"], (root / r["file"]).read_bytes()) for r in labels[i:i + 8]]
        rows += run_chain(backend, inputs, cfg, cue if consistency else None)
    return rows, (time.perf_counter() - t0) / max(1, len(labels))


def figures(labels, rows) -> dict:
    items = [Item(int(r["label"] == "generated"), row.status, row.score, row.verdict, row.initial_verdict,
                  tuple((b.x1, b.y1, b.x2, b.y2) for b in row.boxes), tuple(map(tuple, r.get("boxes") or ())),
                  r["kind"], r["source"], r["split"], row.width or 0, row.height or 0)
             for r, row in zip(labels, rows)]
    out = {"all": metrics(items)}
    for kind in ("real", "regional", "whole"):
        out[kind] = metrics([it for it in items if it.kind == kind])
    for fam in sorted({it.source for it in items if it.kind == "regional"}):
        out[f"regional {fam}"] = metrics([it for it in items if it.kind == "regional" and it.source == fam])
    return out


def cue_auc(labels, rows) -> dict:
    real = [row.consistency for r, row in zip(labels, rows) if r["kind"] == "real" and row.consistency is not None]
    out = {}
    for fam in sorted({r["source"] for r in labels if r["kind"] == "regional"}):
        fake = [row.consistency for r, row in zip(labels, rows)
                if r["kind"] == "regional" and r["source"] == fam and row.consistency is not None]
        out[fam] = roc_auc(np.r_[np.zeros(len(real)), np.ones(len(fake))], np.r_[real, fake])
    return out


def fmt(v) -> str:
    return "   -  " if v is None else f"{v:6.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True, help="labels.jsonl of a `zoomin synth` set")
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="detector weights (default: the shipped ones)")
    ap.add_argument("--consistency", default=str(DEFAULT_CONSISTENCY), help="the check's weights (default: shipped)")
    ap.add_argument("--splits", default="test,holdout")
    ap.add_argument("--families", default=None,
                    help="only these families' fakes (comma-separated) and the real images, e.g. the one "
                         "family a --weights detector never saw (default: every image of the split)")
    ap.add_argument("--out", default=None, help="write the figures to this JSON file")
    a = ap.parse_args()
    root = Path(a.labels).parent
    every = [json.loads(line) for line in Path(a.labels).read_text().splitlines() if line.strip()]
    backend = CompactBackend(model=CompactModel.load(a.weights))
    cue = ConsistencyModel.load(a.consistency)
    print(f"detector {backend.model_id}; consistency {cue.version}", flush=True)
    report = {}
    for split in a.splits.split(","):
        labels = [r for r in every if r["split"] == split
                  and (not a.families or r["kind"] == "real" or r["source"] in a.families.split(","))]
        plain, plain_s = scan(backend, cue, labels, root, False)
        withc, with_s = scan(backend, cue, labels, root, True)
        a_fig, b_fig = figures(labels, plain), figures(labels, withc)
        report[split] = {"images": len(labels), "without": a_fig, "with": b_fig, "seconds_per_image":
                         [plain_s, with_s], "consistency_auc_regional_vs_real": cue_auc(labels, withc)}
        print(f"\n{split}: {len(labels)} images; {plain_s:.3f} s/image without the check, {with_s:.3f} with "
              f"({with_s / plain_s:.2f}x)")
        print(f"{'':24s} {'accuracy':>17s} {'ROC-AUC':>15s} {'ECE':>15s} {'regions @0.5':>15s} {'mean IoU':>15s}")
        for key in a_fig:
            x, y = a_fig[key], b_fig[key]
            if "accuracy" not in x:
                continue
            cells = [(x.get(k), y.get(k)) for k in ("accuracy", "roc_auc", "ece", "region_recall", "mean_iou")]
            print(f"{key + ' (' + str(x['images']) + ')':24s} " + " ".join(f"{fmt(p)} ->{fmt(q)}" for p, q in cells))
        print("consistency score alone, regional fakes against real (ROC-AUC): " + ", ".join(
            f"{k} {fmt(v).strip()}" for k, v in report[split]["consistency_auc_regional_vs_real"].items()))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
