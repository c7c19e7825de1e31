"""The cascade against its second tier on every image, on a labelled set, in one run:

    python benchmarks/cascade.py --labels data/synth/labels.jsonl [--split holdout] [--n 120]
        [--escalate LOW:HIGH] [--device cpu|cuda]

First tier: the bundled compact weights (their archive threshold alone; in the cascade, the band,
by default the one the weights carry). Second tier: a tiny, randomly initialised Qwen2.5-VL built
offline (tests/tiny_vlm.py) whose answers are scripted - a box and "generated" - so that both of
its queries run in full (the score still comes from its own logits). It knows nothing: its
verdicts only show what the band sends on, not what a trained model would find. So the quality
columns give the cascade's bounds (recall with a second tier that finds every escalated fake,
false positives with one that flags every escalated real), and the speed columns are real.

Prints, for tier 1 alone, tier 2 alone and the cascade: images/s, seconds per image, share sent to
tier 2, recall and false-positive rate; and what the cascade costs per image for a second tier of
any speed (tier-1 time + share x tier-2 time).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from zoomin_core import ImageInput, load_backend, run_chain  # noqa: E402
from zoomin_core.cascade import Band, run_cascade  # noqa: E402
from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel  # noqa: E402


def labelled(labels: str, split: str | None, n: int, seed: int = 0) -> tuple[list[ImageInput], np.ndarray]:
    root = Path(labels).resolve().parent
    rows = [json.loads(line) for line in Path(labels).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if split is None or r.get("split") == split]
    pick = np.random.default_rng(seed).permutation(len(rows))[:n]
    chosen = [rows[i] for i in sorted(pick)]
    inputs = [ImageInput(str(root / r["file"]), (root / r["file"]).read_bytes()) for r in chosen]
    return inputs, np.array([r["label"] == "generated" for r in chosen])


def scripted_vlm(folder: Path, device: str):
    from transformers import LogitsProcessorList

    from tests.tiny_vlm import Script, build_qwen
    backend = load_backend("vlm", str(build_qwen(folder)), device=device, max_new_tokens=160)
    answers = {"scan": "The texture near the top repeats. <boxes>[[20, 20, 120, 100]]</boxes> "
                       "<verdict>generated</verdict>",
               "zoom": "Crop 1 shows a tiled pattern. <verdict>generated</verdict>"}
    eos = backend.model.generation_config.eos_token_id
    backend.generate_hook = lambda q, k: {"logits_processor": LogitsProcessorList(
        [Script(backend.tokenizer, [answers[q]] * k, eos)])}
    return backend


def timed(fn):
    t0 = time.perf_counter()
    rows = fn()
    return rows, time.perf_counter() - t0


def quality(rows, y: np.ndarray) -> tuple[float, float]:
    flagged = np.array([r.verdict == "generated" for r in rows])
    return float(flagged[y].mean()), float(flagged[~y].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--split", default="holdout", help="labels of this split only ('' for all)")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--escalate", default=None, metavar="LOW:HIGH", help="default: the weights' band")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    inputs, y = labelled(a.labels, a.split or None, a.n)
    meta = CompactModel.load(DEFAULT_WEIGHTS).meta
    band = Band(*(map(float, a.escalate.split(":")) if a.escalate else meta["escalate_band"]))
    first = load_backend("compact", device=a.device)
    cascaded_first = load_backend("compact", device=a.device, threshold=band.high)
    with tempfile.TemporaryDirectory() as d:
        second = scripted_vlm(Path(d) / "tiny-qwen", a.device)
        run_chain(first, inputs[:2])           # warm-up: first calls of each model
        run_chain(second, inputs[:2])
        one, t_one = timed(lambda: run_chain(first, inputs))
        two, t_two = timed(lambda: run_chain(second, inputs))
        both, t_both = timed(lambda: run_cascade(cascaded_first, second, inputs, band))
    assert len(one) == len(two) == len(both) == len(inputs)
    share = float(np.mean([len(r.tiers) == 2 for r in both]))
    n = len(inputs)
    print(f"{n} images ({int(y.sum())} generated) from {a.labels} split {a.split or 'all'}; band {band}; "
          f"device {a.device}")
    print(f"{'':28s}{'images/s':>10s}{'s/image':>10s}{'to tier 2':>11s}{'recall':>9s}{'FPR':>8s}")
    for name, rows, t, sent in (("tier 1 alone (compact)", one, t_one, 0.0), ("tier 2 alone (tiny VLM)", two, t_two, 1.0),
                                ("cascade", both, t_both, share)):
        recall, fpr = quality(rows, y)
        print(f"{name:28s}{n / t:10.2f}{t / n:10.4f}{sent:11.3f}{recall:9.3f}{fpr:8.3f}")
    print(f"cascade / tier 2 alone, time: {t_both / t_two:.2f}")
    print(f"per image, any second tier: {t_one / n:.4f} s + {share:.3f} x (its seconds per image); "
          f"for a second tier at 1 s/image: {t_one / n + share:.3f} s, {1 / (t_one / n + share):.2f}x its speed alone")


if __name__ == "__main__":
    main()
