"""The archive operating point of compact weights: the threshold that flags about 1% of real
photos the weights never saw, and what it costs in recall, in one run:

    zoomin synth --out data/synth              # its test/holdout splits give the recall
    zoomin scan data/synth/images --out runs/synth
    python benchmarks/operating_point.py --results runs/synth --labels data/synth/labels.jsonl \\
        [--weights W] [--fpr 0.01] [--n 600] [--write OUT.safetensors]

1. Real images never used: `--n` random crops (256-640 px; some downscaled, some with a patch
   out of focus as `zoomin synth` makes them; JPEG quality 70-95) of the photos `zoomin synth`
   holds out from training and calibration (coffee, coins, flower), scanned in this process.
   The threshold is the lowest that flags at most `--fpr` of them.
2. How that rate holds on a photo not used to choose it: for each of the three photos, the
   threshold chosen on the other two, and the share of this one's crops it flags.
3. At the threshold, from RESULTS (a scan of the synth set with the same weights): the share of
   real images flagged and of generated images found, per split and kind - the holdout split's
   images are collages of the same held-out photos, made the synth set's way. The escalation
   band's low end keeps `--recall` of the holdout split's generated images.
4. `--write`: the weights again with `archive_threshold`, `escalate_band` and these figures in
   their metadata, under `--version`; `zoomin scan` uses the threshold unless `--threshold` or
   `--prior` is given, and the band for `--cascade` unless `--escalate` is.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoomin_core import ImageInput, run_chain  # noqa: E402
from zoomin_core.backends.compact import CompactBackend  # noqa: E402
from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel  # noqa: E402
from zoomin_core.evaluate import threshold_at_fpr  # noqa: E402
from zoomin_core.synth import DEFAULT_HOLDOUT_PHOTOS, defocus_patch, package_photos  # noqa: E402


def unseen_crops(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """(photo name, JPEG bytes) of n crops, the photos in turn."""
    photos = [(k, v) for k, v in package_photos().items() if k in DEFAULT_HOLDOUT_PHOTOS]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        name, a = photos[i % len(photos)]
        h, w = a.shape[:2]
        side = int(rng.integers(256, min(640, h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = a[y:y + side, x:x + side]
        if rng.random() < 0.3:   # real soft focus, as the synth set's real images have it
            crop = defocus_patch(crop, rng)
        crop = Image.fromarray(crop).convert("RGB")
        if rng.random() < 0.5:   # some downscaled, as archives hold them
            crop = crop.resize((int(side * rng.uniform(0.6, 1.0)),) * 2, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
        out.append((name, buf.getvalue()))
    return out


def holdout_generated(results: str, labels: str) -> np.ndarray:
    import pyarrow.parquet as pq
    rows = {r["uri"]: r["score"] for r in pq.read_table(results, columns=["uri", "score"]).to_pylist()}
    root = Path(labels).resolve().parent
    labs = [json.loads(line) for line in Path(labels).read_text().splitlines()]
    return np.array([rows[str(root / lab["file"])] for lab in labs if lab.get("split") == "holdout"
                     and lab["label"] == "generated" and rows.get(str(root / lab["file"])) is not None])


def at_threshold(results: str, labels: str, t: float) -> dict:
    import pyarrow.parquet as pq
    rows = {r["uri"]: r for r in pq.read_table(results, columns=["uri", "score", "status"]).to_pylist()}
    root = Path(labels).resolve().parent
    groups: dict = {}
    for line in Path(labels).read_text().splitlines():
        lab = json.loads(line)
        row = rows.get(str(root / lab["file"]))
        if lab.get("split") not in ("test", "holdout") or row is None or row["score"] is None:
            continue
        key = (lab["split"], lab["label"] if lab["label"] == "real" else lab.get("kind", "generated"))
        groups.setdefault(key, []).append(row["score"] >= t)
    return {f"{s}/{k}": (float(np.mean(v)), len(v)) for (s, k), v in sorted(groups.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--results", default=None, help="a scan of a synth set with the same weights")
    ap.add_argument("--labels", default=None, help="that set's labels.jsonl")
    ap.add_argument("--recall", type=float, default=0.9, help="recall the escalation band keeps (holdout split)")
    ap.add_argument("--write", default=None, help="write the weights with archive_threshold to this file")
    ap.add_argument("--version", default=None, help="with --write: the version the weights carry")
    a = ap.parse_args()
    t0 = time.time()
    backend = CompactBackend(a.weights, prior=None)
    crops = unseen_crops(a.n)
    rows = run_chain(backend, [ImageInput(f"unseen-{i}.jpg", b) for i, (_, b) in enumerate(crops)])
    names = np.array([n for n, _ in crops])
    scores = np.array([r.score if r.score is not None else np.nan for r in rows])
    keep = ~np.isnan(scores)
    names, scores = names[keep], scores[keep]
    op = threshold_at_fpr(np.zeros(len(scores)), scores, a.fpr)
    t = op["threshold"]
    print(f"{len(scores)} crops of photos never used ({', '.join(DEFAULT_HOLDOUT_PHOTOS)}), "
          f"scanned in {time.time() - t0:.0f} s")
    for x in (0.5, t):
        print(f"  threshold {x:.4f}: {np.mean(scores >= x):.3f} of them flagged ({int((scores >= x).sum())} "
              f"of {len(scores)})")
    print("each photo left out: threshold chosen on the other two -> share of its crops flagged")
    transfer = {}
    for name in sorted(set(names)):
        other = threshold_at_fpr(np.zeros((names != name).sum()), scores[names != name], a.fpr)["threshold"]
        transfer[name] = float(np.mean(scores[names == name] >= other))
        print(f"  {name:8s} threshold {other:.4f}: {transfer[name]:.3f} of {(names == name).sum()}")
    figures, band = {}, None
    if a.results and a.labels:
        print(f"on {a.results} (share flagged, images):")
        for x in (0.5, t):
            figures = at_threshold(a.results, a.labels, x)
            print(f"  threshold {x:.4f}: " + "; ".join(f"{k} {v:.3f} ({n})" for k, (v, n) in figures.items()))
        gen = np.sort(holdout_generated(a.results, a.labels))
        low = min(float(gen[int(np.floor((1 - a.recall) * len(gen)))]), t)
        band = [low, t]
        print(f"escalation band keeping {a.recall:g} of the holdout split's generated images: {low:.4f}:{t:.4f}; "
              f"it holds {np.mean((scores >= low) & (scores < t)):.3f} of the unseen crops")
    if a.write:
        model = CompactModel.load(a.weights)
        model.meta["archive_threshold"] = t
        if band:
            model.meta["escalate_band"] = band
        if a.version:
            model.meta["version"] = a.version
        model.meta["archive_point"] = {"target_fpr": a.fpr, "unseen_crops": len(scores), "fpr": op["fpr"],
                                       "left_out_photo_fpr": transfer,
                                       "at_threshold": {k: v for k, (v, _) in figures.items()}}
        model.save(a.write)
        print(f"wrote {a.write} with archive_threshold {t:.4f}")


if __name__ == "__main__":
    main()
