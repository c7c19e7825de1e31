"""Does a model of real photos alone carry to generator families it never saw? A measurement on
crops, outside the job.

    python benchmarks/real_surprise.py --labels data/synth/labels.jsonl [--steps 1500]
        [--zoom-steps 1000] [--out runs/real-surprise]

1. A blind-spot pixel predictor (each pixel's value from its 7x7 neighbourhood without itself,
   as a Laplace distribution: a mean and a scale) is trained on patches of the `train` split's
   real images only. No generated image is used: whatever it learns, it learns about photos.
2. Each crop is described by seven statistics of how surprised the predictor is: mean negative
   log-likelihood, mean surprise beyond the predicted entropy (|x - mean| / scale - 1) and its
   absolute value, mean log scale, and the lowest, highest and spread of that surprise over
   16 px blocks. Generated regions come out too predictable or too noisy for their content.
3. Crops: the central (up to) 256 px of each true region of the `test` and `holdout` fakes,
   against random 256 px crops of real images of those splits (2 per image).
4. For each held-out family: a 7-weight logistic regression on the statistics, fitted on the
   other families' crops against half of the real crops, scores the held-out family against
   the other half of the real crops (repeated over --repeats random halves, averaged). With
   --zoom-steps > 0, a zoom net (the compact model's, 3x3 high-pass input, no hard negatives)
   is trained without the held-out family and scored on the same crops: alone, fitted together
   with the statistics, and as the larger of the two opinions (see held_out).

Prints ROC-AUCs per held-out family (its whole and regional fakes, and the other families'
regional fakes), and writes them with each statistic's own to OUT/result.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from zoomin_core.compact_model import ZoomNet, pool_logits, to_batch  # noqa: E402
from zoomin_core.evaluate import roc_auc  # noqa: E402
from surprise import MIN_SIDE, STATS, crop_stats, fit_blindspot, region_windows  # noqa: E402
from zoomin_core.train import _fit, _patch, load_labelled  # noqa: E402

FAMILIES = ("ae_tconv", "ae_resize", "sr_shuffle", "denoise")


@torch.inference_mode()
def stats_of(net, crop: np.ndarray) -> np.ndarray:
    return crop_stats(net, to_batch([crop]))[0]


def auc(y, s) -> float:
    a = roc_auc(y, s)
    return float("nan") if a is None else a  # a kind with no fakes in these splits


def logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 3000):
    w, b = np.zeros(X.shape[1]), 0.0
    for _ in range(iters):
        g = 1 / (1 + np.exp(-(X @ w + b))) - y
        w -= 0.1 * (X.T @ g / len(y) + l2 * w)
        b -= 0.1 * g.mean()
    return w, b


def held_out(X, z, lab, src, kind, held, repeats: int) -> dict:
    """ROC-AUC of each way to score crops, for the held-out family's whole and regional fakes
    and for the other families' regional fakes, each against the real crops not used to fit:

      surprise  the 7-weight logistic regression on the statistics alone
      zoom      the zoom net's logit alone (None: not trained)
      fitted    the logistic regression with the zoom logit as an eighth input
      larger    the larger of zoom logit and surprise logit, each standardised on real crops
                (what the job does, surprise.combine)

    Fitted on the other families' crops and a random half of the real crops; averaged over
    `repeats` halves."""
    res: dict = {}
    reals = np.where(lab == 0)[0]
    others = np.where((lab == 1) & (src != held) & (kind == "regional"))[0]
    for r in range(repeats):
        idx = np.random.default_rng(r).permutation(reals)
        fit_r, test_r = idx[: len(idx) // 2], idx[len(idx) // 2:]
        tr = np.r_[np.where((lab == 1) & (src != held))[0], fit_r]

        def lr_scores(F_):
            Z = (F_ - F_[fit_r].mean(0)) / (F_[fit_r].std(0) + 1e-9)
            w, b = logistic(Z[tr], lab[tr].astype(float))
            return Z @ w

        def std(v):
            return (v - v[fit_r].mean()) / (v[fit_r].std() + 1e-9)

        scores = {"surprise": std(lr_scores(X))}
        if z is not None:
            scores.update(zoom=std(z), fitted=lr_scores(np.c_[X, z]))
            scores["larger"] = np.maximum(scores["zoom"], scores["surprise"])
        for name, v in scores.items():
            groups = {k: np.where((src == held) & (kind == k))[0] for k in ("whole", "regional")}
            groups["training_families"] = others
            for g, pos in groups.items():
                y = np.r_[np.ones(len(pos)), np.zeros(len(test_r))]
                res.setdefault(name, {}).setdefault(g, []).append(auc(y, np.r_[v[pos], v[test_r]]))
    return {n: {g: float(np.mean(v)) for g, v in d.items()} for n, d in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default="data/synth/labels.jsonl", help="a labelled set made by `zoomin synth`")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of the blind-spot predictor")
    ap.add_argument("--zoom-steps", type=int, default=1000, help="steps of each held-out zoom net (0: skip them)")
    ap.add_argument("--repeats", type=int, default=5, help="random halves of the real crops to average over")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/real-surprise", help="folder for result.json")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.time()
    samples = load_labelled(a.labels)
    train_set = [s for s in samples if s.split == "train"]
    families = [f for f in FAMILIES if any(s.source == f for s in samples)]
    print(f"loaded {len(samples)} images [{time.time() - t0:.0f}s]", flush=True)
    net = fit_blindspot([s.full for s in train_set if s.label == 0], a.steps, a.seed)
    crops = [(s.label, s.source, s.kind, win)
             for s, win in region_windows([s for s in samples if s.split in ("test", "holdout")], seed=123)
             if min(win.shape[:2]) >= MIN_SIDE]
    lab = np.array([c[0] for c in crops])
    src = np.array([c[1] for c in crops])
    kind = np.array([c[2] for c in crops])
    X = np.array([stats_of(net, c[3]) for c in crops])
    print(f"{len(crops)} crops, {int((lab == 0).sum())} real [{time.time() - t0:.0f}s]", flush=True)
    result: dict = {"stats": {}, "held_out": {}}
    for f in families:
        # one statistic alone, in its better direction (nothing fitted), against all real crops
        reals = np.where(lab == 0)[0]
        result["stats"][f] = {}
        for i, name in enumerate(STATS):
            for k in ("whole", "regional"):
                pos = np.where((src == f) & (kind == k))[0]
                a_ = auc(np.r_[np.ones(len(pos)), np.zeros(len(reals))], np.r_[X[pos, i], X[reals, i]])
                result["stats"][f][f"{name}/{k}"] = max(a_, 1 - a_)
        z = None
        if a.zoom_steps:
            torch.manual_seed(a.seed)
            rng = np.random.default_rng(a.seed)
            others = [s for s in train_set if s.source != f]
            zoom = ZoomNet()
            y = torch.cat([torch.ones(16), torch.zeros(16)])
            _fit(zoom, a.zoom_steps, 2e-3,
                 lambda: (to_batch([_patch(others, p, 96, rng) for p in (True, False) for _ in range(16)]), y),
                 lambda o, t: F.binary_cross_entropy_with_logits(pool_logits(o), t), f"zoom-without-{f}")
            with torch.inference_mode():
                z = np.array([float(pool_logits(zoom(to_batch([c[3]])))) for c in crops])
        result["held_out"][f] = held_out(X, z, lab, src, kind, f, a.repeats)
        print(f"held out {f} [{time.time() - t0:.0f}s]", flush=True)
    print(f"{'':10s} {'':9s} " + " ".join(f"{g:>18s}" for g in ("whole", "regional", "training families")))
    names = list(next(iter(result["held_out"].values())))  # a family with no fakes here reads nan
    for f in families + ["mean"]:
        for n in names:
            vals = [result["held_out"][x][n] for x in (families if f == "mean" else [f])]
            cells = [np.nanmean([v[g] for v in vals]) for g in ("whole", "regional", "training_families")]
            print(f"{f:10s} {n:9s} " + " ".join(f"{c:18.3f}" for c in cells))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
