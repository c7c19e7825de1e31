"""Speed of the training loop's jobs on this machine: `zoomin annotate` (templates, and a teacher)
in images/s and `zoomin finetune` in optimiser steps/s, each run as a user runs it (the CLI's
own code path, on a local Ray cluster started once for all of them).

    python benchmarks/annotate_finetune_speed.py [--n 64] [--side 512] [--steps 40] [--hidden 128]

The models are tiny Qwen2.5-VL checkpoints built offline with random weights (tests/tiny_vlm.py),
so the figures measure the jobs' own machinery (reading, decoding, Ray Data and Ray Train, the
processor, the model at this size), not a real model's compute: on a real 3B-7B base the model
dominates and the figures belong to a GPU. The teacher's answers run to --max-new-tokens
(random weights write no verdict), so its row is an upper bound on generation per image.
Fine-tuning steps/s is read from the run's own progress lines: start-up is reported apart.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="labelled images (default 64)")
    ap.add_argument("--side", type=int, default=512, help="long side of the images (default 512)")
    ap.add_argument("--steps", type=int, default=40, help="fine-tuning steps per run (default 40)")
    ap.add_argument("--hidden", type=int, default=128, help="width of the tiny model (default 128)")
    ap.add_argument("--teacher-tokens", type=int, default=32, help="teacher's --max-new-tokens (default 32)")
    a = ap.parse_args()
    import ray

    from jobs.cli import main as zoomin
    from tests.tiny_vlm import build_qwen
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        paths = large_jpegs(root / "img", a.n, a.side)
        labels = root / "labels.jsonl"
        labels.write_text("".join(json.dumps({"file": str(p), "label": "generated" if i % 2 else "real"}) + "\n"
                                  for i, p in enumerate(paths)))
        base = build_qwen(root / "base", hidden=a.hidden)
        ray.init(include_dashboard=False, log_to_driver=False)
        zoomin(["annotate", str(labels), "--out", str(root / "warm"), "--review", "0"])   # Ray Data warm-up
        rows = []

        def timed(name, args, unit):
            buf = io.StringIO()
            t = time.perf_counter()
            with contextlib.redirect_stdout(buf):
                rc = zoomin(args)
            took = time.perf_counter() - t
            rows.append((name, rc, took, unit(took, buf.getvalue())))

        per_image = lambda took, _out: f"{a.n / took:.2f} images/s"   # noqa: E731
        timed("annotate, templates", ["annotate", str(labels), "--out", str(root / "t"), "--review", "0"], per_image)
        timed("annotate, templates + review page (100)", ["annotate", str(labels), "--out", str(root / "t2")],
              per_image)
        timed(f"annotate, teacher ({a.teacher_tokens} tokens a query)",
              ["annotate", str(labels), "--out", str(root / "teach"), "--teacher", str(base), "--review", "0",
               "--max-new-tokens", str(a.teacher_tokens)], per_image)

        for workers in (1, 2):
            for mode in (["--full"], []):
                out = root / f"o{workers}{len(mode)}"
                steps_per_s = lambda took, _o, out=out: "{:.2f} steps/s (training loop)".format(  # noqa: E731
                    json.loads((out / "zoomin_finetune.json").read_text())["steps_per_s"])
                timed(f"finetune {'full' if mode else 'LoRA'}, {workers} worker(s), batch 2",
                      ["finetune", str(root / "t"), "--base", str(base), "--out", str(out),
                       *mode, "--steps", str(a.steps), "--batch-size", "2", "--workers", str(workers),
                       "--checkpoints", str(root / "ck"), "--checkpoint-every", str(a.steps)], steps_per_s)
    print(f"\n{a.n} images of {a.side} px (real photos), tiny Qwen2.5-VL hidden {a.hidden}, "
          f"{ray.cluster_resources().get('CPU', 0):.0f} CPUs")
    print(f"{'job':48s} {'exit':>4s} {'wall s':>7s}  rate")
    for name, rc, took, rate in rows:
        print(f"{name:48s} {rc:>4d} {took:7.1f}  {rate}")


if __name__ == "__main__":
    main()
