"""Does a learned self-consistency cue find regions of generator families it never saw?

    python benchmarks/consistency.py --labels data/synth/labels.jsonl [--steps 5000] [--images 400]
        [--json FILE] [--against runs/quality]
    python benchmarks/consistency.py --labels data/synth/labels.jsonl --scores FILE --against runs/quality

The check of `zoomin scan --consistency` (`zoomin_core/consistency.py`), trained here as `zoomin
train-consistency` trains it (`consistency_train.py`), on the real photos of the `train` split
alone, and scored on its own: the image's score is the map's peak; the block where it peaks is a
hit when its centre lies in a true region. Reported per split and family for the regional fakes
against the real images of the same split: ROC-AUC and hit rate. No family was seen in training,
so every family is held out. --json also keeps each image's score and peak (file -> [score, [x,
y]]); --scores reads such a file instead of training again. (What the check changes in the job,
beside the detector: `benchmarks/consistency_stage.py`.)

--against DIR: a `benchmarks/quality.py --out` folder. For each family F it holds a detector
trained without F (DIR/without-F/scan_zoom): its scores for F's regional fakes against the real
images, the consistency scores, and the two combined without labels (the mean of each score's
rank among the split's images), as ROC-AUC per split; and how often the detector's first box and
the consistency map's peak have their centre in a true region of those fakes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
from consistency import PATCH as P  # noqa: E402
from consistency_train import train_consistency  # noqa: E402
from zoomin_core.decode import decode_full  # noqa: E402
from zoomin_core.evaluate import roc_auc  # noqa: E402


def ranks(x: np.ndarray) -> np.ndarray:
    return x.argsort().argsort() / max(len(x) - 1, 1)


def against(report: dict, rows: list[dict], folder: Path) -> None:
    from jobs.sinks import read_results
    by_name = {Path(r["file"]).name: r for r in rows}
    print("regional fakes of the family a detector never saw, against real images: ROC-AUC; centre in a true region")
    print(f"{'family':12s} {'split':8s} {'fakes':>5s} {'detector':>9s} {'consistency':>12s} {'rank mean':>10s} "
          f"{'detector box':>13s} {'consistency peak':>17s}")
    table = []
    for held in sorted(p.name[len("without-"):] for p in folder.glob("without-*") if (p / "scan_zoom").is_dir()):
        res = read_results(str(folder / f"without-{held}" / "scan_zoom"), ["uri", "score", "boxes"]).to_pylist()
        det = {Path(r["uri"]).name: r["score"] for r in res}
        first = {Path(r["uri"]).name: ((b["x1"] + b["x2"]) / 2, (b["y1"] + b["y2"]) / 2)
                 for r in res for b in r["boxes"][:1]}
        for split, rep in report.items():
            keys = [k for k in rep["images"] if Path(k).name in det
                    and (by_name[Path(k).name]["kind"] == "real" or by_name[Path(k).name]["source"] == held)]
            y = np.array([by_name[Path(k).name]["kind"] != "real" for k in keys], float)
            if not y.any() or y.all():
                continue
            d = np.array([det[Path(k).name] for k in keys])
            c = np.array([rep["images"][k][0] for k in keys])
            fakes = [k for k, lab in zip(keys, y) if lab]

            def inside(point, k):
                return point is not None and any(b[0] <= point[0] < b[2] and b[1] <= point[1] < b[3]
                                                 for b in by_name[Path(k).name]["boxes"])
            hit_det = np.mean([inside(first.get(Path(k).name), k) for k in fakes])
            hit_con = np.mean([inside(rep["images"][k][1], k) for k in fakes])
            figures = [roc_auc(y, d), roc_auc(y, c), roc_auc(y, (ranks(d) + ranks(c)) / 2), hit_det, hit_con]
            table.append((split, figures))
            print(f"{held:12s} {split:8s} {len(fakes):5d} " + " ".join(
                f"{x:{w}.3f}" for x, w in zip(figures, (9, 12, 10, 13, 17))))
    for split in report:
        v = [f for s_, f in table if s_ == split]
        if v:
            print(f"{'average':12s} {split:8s} {'':5s} " + " ".join(
                f"{x:{w}.3f}" for x, w in zip(np.mean(v, 0), (9, 12, 10, 13, 17))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=48, help="pairs per step")
    ap.add_argument("--images", type=int, default=400, help="altered real images to train on")
    ap.add_argument("--splits", default="test,holdout")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scores", default=None, help="a --json file of an earlier run: no training, no scoring")
    ap.add_argument("--against", default=None, help="a benchmarks/quality.py --out folder to compare and combine with")
    a = ap.parse_args()
    rows = [json.loads(line) for line in Path(a.labels).read_text().splitlines() if line.strip()]
    report = json.loads(Path(a.scores).read_text()) if a.scores else run(a, rows)
    if a.against:
        against(report, rows, Path(a.against))


def run(a, rows: list[dict]) -> dict:
    root = Path(a.labels).parent
    reals = [decode_full((root / r["file"]).read_bytes()) for r in rows if r["split"] == "train" and r["label"] == "real"]
    t0 = time.perf_counter()

    def progress(step, steps, loss, acc):
        print(f"step {step}/{steps} loss {loss:.3f} pair accuracy (last 250) {acc:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    model = train_consistency(reals, steps=a.steps, images=a.images, batch=a.batch, seed=a.seed, progress=progress)
    del reals

    report = {}
    for split in a.splits.split(","):
        chosen = [r for r in rows if r["split"] == split and r["kind"] in ("real", "regional")]
        scores, hits, per_image = {}, {}, {}
        t0 = time.perf_counter()
        for r in chosen:
            img = decode_full((root / r["file"]).read_bytes())
            m = model.anomaly_map(img)
            i, j = np.unravel_index(np.argmax(m), m.shape)
            cy, cx = (i + 0.5) * P, (j + 0.5) * P
            src = r["source"]
            scores.setdefault(src, []).append(float(m.max()))
            per_image[r["file"]] = [round(float(m.max()), 5), [round(cx), round(cy)]]
            if r["kind"] == "regional":
                hits.setdefault(src, []).append(any(b[0] <= cx < b[2] and b[1] <= cy < b[3] for b in r["boxes"]))
        real = np.array(scores.get("real", []))
        out = {}
        for src in sorted(set(scores) - {"real"}):
            s = np.array(scores[src])
            auc = roc_auc(np.r_[np.zeros(len(real)), np.ones(len(s))], np.r_[real, s])
            out[src] = {"regional": len(s), "roc_auc_vs_real": round(auc, 3), "peak_in_region": round(float(np.mean(hits[src])), 3)}
        report[split] = {"real": len(real), "families": out, "images": per_image}
        print(f"{split}: {len(chosen)} images in {time.perf_counter() - t0:.0f} s; real {len(real)}", flush=True)
        for src, f in out.items():
            print(f"  {src:12s} regional {f['regional']:3d}  ROC-AUC vs real {f['roc_auc_vs_real']:.3f}  "
                  f"peak in a true region {f['peak_in_region']:.3f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
