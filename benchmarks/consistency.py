"""Does a learned self-consistency cue find regions of generator families it never saw?

    python benchmarks/consistency.py --labels data/synth/labels.jsonl [--steps 5000] [--images 400]
        [--json FILE] [--against runs/quality]
    python benchmarks/consistency.py --labels data/synth/labels.jsonl --scores FILE --against runs/quality

A regional fake is a photo whose region went through another process than the rest of it. A
network that only tells "these two patches of one image went through the same process" (in the
manner of learned self-consistency for splice detection) need not know any generator: this one is
trained on real photos of the `train` split alone, each with 1-3 regions altered by the
generator-agnostic operations of `zoomin_core/pseudo.py` (resample, blur, noise, median, earlier
JPEG) and then given the set's final encoding (JPEG 92). Pairs of 64 px patches are "same" (both
outside the altered regions, or both inside one) or "different" (one in, one out).

On an image: 64 px blocks on a grid, each block's agreement with 200 blocks drawn from the same
image (mean pair probability), anomaly = 1 - agreement, smoothed over 3x3 blocks. The image's
score is the highest anomaly; the block where it peaks is a hit when its centre lies in a true
region. Reported per split and family for the regional fakes against the real images of the same
split: ROC-AUC and hit rate. No family was seen in training, so every family is held out. --json also
keeps each image's score and peak (file -> [score, [x, y]]); --scores reads such a file instead of
training again.

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
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoomin_core.compact_model import HighPass, _conv  # noqa: E402
from zoomin_core.decode import decode_full  # noqa: E402
from zoomin_core.evaluate import roc_auc  # noqa: E402
from zoomin_core.pseudo import make_pseudo  # noqa: E402
from zoomin_core.synth import encode_jpeg  # noqa: E402
from zoomin_core.train import _batch as tensor  # noqa: E402  uint8 patches -> (B, 3, h, w) in [0, 1]

P = 64  # patch side, native pixels


class Embed(nn.Module):
    """64 px patch -> 64-d description of its processing (from the high-pass residual)."""

    def __init__(self, width=48):
        super().__init__()
        self.hp = HighPass()
        self.body = nn.Sequential(_conv(3, 24), _conv(24, width, 2), _conv(width, width), _conv(width, width, 2),
                                  _conv(width, width), _conv(width, width, 2))
        self.out = nn.Linear(2 * width, 64)

    def forward(self, x):
        h = self.body(self.hp(x))
        return self.out(torch.cat([h.mean((2, 3)), h.std((2, 3))], 1))


class Same(nn.Module):
    """Two descriptions -> logit that the patches went through the same process."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(128, 64), nn.LeakyReLU(0.1), nn.Linear(64, 1))

    def forward(self, a, b):
        return self.mlp(torch.cat([(a - b).abs(), a * b], -1))[..., 0]


def altered_pool(reals, n, rng):
    pool = []
    for _ in range(n):
        full = reals[rng.integers(len(reals))]
        pixels, boxes, _ = make_pseudo(full, rng)
        boxes = [b for b in boxes if b[2] - b[0] >= P and b[3] - b[1] >= P]
        if boxes:
            pool.append((decode_full(encode_jpeg(pixels, 92)), boxes))
    return pool


def patch(img, boxes, inside, rng, box=None):
    H, W = img.shape[:2]
    for _ in range(100):
        if inside:
            x1, y1, x2, y2 = box
            y, x = rng.integers(y1, y2 - P + 1), rng.integers(x1, x2 - P + 1)
        else:
            y, x = rng.integers(H - P + 1), rng.integers(W - P + 1)
            if any(x < b[2] and x + P > b[0] and y < b[3] and y + P > b[1] for b in boxes):
                continue
        return img[y:y + P, x:x + P]
    return None


def pairs(pool, rng, n):
    a, b, y = [], [], []
    while len(y) < n:
        img, boxes = pool[rng.integers(len(pool))]
        box = boxes[rng.integers(len(boxes))]
        r = rng.random()
        kind = (False, False, 1) if r < 0.35 else (True, True, 1) if r < 0.5 else (True, False, 0)
        p = patch(img, boxes, kind[0], rng, box)
        q = patch(img, boxes, kind[1], rng, box)
        if p is None or q is None:
            continue
        a.append(p)
        b.append(q)
        y.append(kind[2])
    return tensor(a), tensor(b), torch.tensor(y, dtype=torch.float32)


@torch.inference_mode()
def anomaly_map(embed, same, img, rng, refs=200):
    H, W = img.shape[:2]
    gh, gw = H // P, W // P
    blocks = [img[i * P:(i + 1) * P, j * P:(j + 1) * P] for i in range(gh) for j in range(gw)]
    e = torch.cat([embed(tensor(blocks[k:k + 256])) for k in range(0, len(blocks), 256)])
    ref = e[torch.from_numpy(rng.choice(len(blocks), min(refs, len(blocks)), replace=False))]
    agree = torch.sigmoid(same(e[:, None, :].expand(-1, len(ref), -1), ref[None].expand(len(e), -1, -1))).mean(1)
    m = (1 - agree).reshape(1, 1, gh, gw)
    return F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0, 0].numpy()


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
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    root = Path(a.labels).parent
    t0 = time.perf_counter()
    reals = [decode_full((root / r["file"]).read_bytes()) for r in rows if r["split"] == "train" and r["label"] == "real"]
    pool = altered_pool(reals, a.images, rng)
    print(f"{len(reals)} real train images, {len(pool)} altered ones made in {time.perf_counter() - t0:.0f} s", flush=True)
    del reals

    embed, same = Embed(), Same()
    params = list(embed.parameters()) + list(same.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=a.steps, pct_start=0.1)
    t0, acc = time.perf_counter(), []
    for step in range(a.steps):
        x1, x2, y = pairs(pool, rng, a.batch)
        logit = same(embed(x1), embed(x2))
        loss = F.binary_cross_entropy_with_logits(logit, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        acc.append(float(((logit > 0).float() == y).float().mean()))
        if step % 250 == 0 or step == a.steps - 1:
            print(f"step {step + 1}/{a.steps} loss {loss.item():.3f} pair accuracy (last 250) "
                  f"{np.mean(acc[-250:]):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    embed.eval()
    same.eval()

    report = {}
    for split in a.splits.split(","):
        chosen = [r for r in rows if r["split"] == split and r["kind"] in ("real", "regional")]
        scores, hits, per_image = {}, {}, {}
        t0 = time.perf_counter()
        for r in chosen:
            img = decode_full((root / r["file"]).read_bytes())
            m = anomaly_map(embed, same, img, rng)
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
