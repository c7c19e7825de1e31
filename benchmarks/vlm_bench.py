"""The `vlm` backend with a tiny, randomly initialised Qwen2.5-VL built offline.

    python benchmarks/vlm_bench.py [--n 48] [--side 512] [--device cpu|cuda] [--no-ray]

1. Loop versus Ray job, same images, same checkpoint, random weights (every answer runs to
   --max-new-tokens and is unparseable, so only query 1 runs): images/s of a plain loop calling
   the backend (`run_chain`, batches of 8) and of `zoomin scan --backend vlm` on a local Ray
   cluster (whole run, and the marginal rate of the second half of the images), and the ratios.
   Skipped with --no-ray (e.g. on a GPU box without Ray).
2. Both queries, answers forced to fixed well-formed texts (a logits processor, as in the tests;
   the score still comes from the model's own logits): images/s, seconds per image per query,
   and tokens generated per image for each query. On --device cuda the model runs in bf16.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402


def loop(paths, model, device, max_new_tokens, hook=None, batch=8):
    from zoomin_core import ImageInput, load_backend, run_chain
    backend = load_backend("vlm", model, device=device, max_new_tokens=max_new_tokens, batch_size=batch)
    if hook:
        backend.generate_hook = hook(backend)
    run_chain(backend, [ImageInput(str(paths[0]), paths[0].read_bytes())])  # warm-up
    backend.tokens_generated = {"scan": 0, "zoom": 0}
    t0 = time.perf_counter()
    rows = []
    for i in range(0, len(paths), batch):
        rows += run_chain(backend, [ImageInput(str(p), p.read_bytes()) for p in paths[i:i + batch]])
    return rows, len(paths) / (time.perf_counter() - t0), backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    from transformers import LogitsProcessorList

    from tests.tiny_vlm import Script, build_qwen
    figures: dict = {"n": a.n, "side": a.side, "device": a.device}
    with tempfile.TemporaryDirectory() as d:
        model = str(build_qwen(Path(d) / "tiny-qwen2_5_vl"))
        paths = large_jpegs(Path(d) / "imgs", a.n, a.side)

        rows, rate, _ = loop(paths, model, a.device, a.max_new_tokens)
        assert all(r.status == "unparseable" for r in rows)
        figures["random_loop_images_per_s"] = rate
        if not a.no_ray:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            from jobs.pipeline import JobConfig
            from jobs.scan import RayConfig, run_scan
            cfg = JobConfig(backend="vlm", model=model, backend_options={"max_new_tokens": a.max_new_tokens})
            run_scan(str(Path(d) / "imgs"), str(Path(d) / "warm"), cfg, RayConfig(progress=False))
            half = Path(d) / "half"
            half.mkdir()
            for p in paths[: a.n // 2]:
                (half / p.name).symlink_to(p)
            t0 = time.perf_counter()
            run_scan(str(half), str(Path(d) / "out-half"), cfg, RayConfig(progress=False))
            t_half = time.perf_counter() - t0
            t0 = time.perf_counter()
            s = run_scan(str(Path(d) / "imgs"), str(Path(d) / "out"), cfg, RayConfig(progress=False))
            t_all = time.perf_counter() - t0
            assert s.complete and s.by_status.get("unparseable") == a.n, s.text()
            # Whole run (actor start-up, transformers import and model load included) and the
            # marginal rate of the second half of the images, what a long job sees.
            figures["random_ray_images_per_s"] = a.n / t_all
            figures["random_ray_marginal_images_per_s"] = (a.n - a.n // 2) / max(1e-9, t_all - t_half)
            figures["ray_over_loop"] = figures["random_ray_images_per_s"] / rate
            figures["ray_marginal_over_loop"] = figures["random_ray_marginal_images_per_s"] / rate

        answers = {"scan": "The texture near the top repeats. <boxes>[[20, 20, 120, 100], [130, 40, 200, 150]]"
                           "</boxes> <verdict>real</verdict>",
                   "zoom": "Crop 1 shows a tiled pattern; crop 2 looks natural. <verdict>generated</verdict>"}

        def hook(backend):
            eos = backend.model.generation_config.eos_token_id
            return lambda q, k: {"logits_processor": LogitsProcessorList([Script(backend.tokenizer, [answers[q]] * k, eos)])}

        rows, rate, backend = loop(paths, model, a.device, 160, hook)
        assert all(r.status == "ok" and r.boxes for r in rows), [r.error for r in rows if r.status != "ok"]
        figures.update(scripted_images_per_s=rate, dtype=str(backend.dtype),
                       scan_s_per_image=sum(r.scan_s for r in rows) / a.n,
                       zoom_s_per_image=sum(r.zoom_s for r in rows) / a.n,
                       scan_tokens_per_image=backend.tokens_generated["scan"] / a.n,
                       zoom_tokens_per_image=backend.tokens_generated["zoom"] / a.n,
                       crops_per_image=sum(len(r.boxes) for r in rows) / a.n,
                       flips=sum(r.initial_verdict != r.verdict for r in rows))
    for k, v in figures.items():
        print(f"  {k:28s} {v:.3f}" if isinstance(v, float) else f"  {k:28s} {v}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
