"""The `vlm` backend at the paper's model size: Qwen2.5-VL 7B (or 32B) built from its published
shape with random weights, on a GPU, the two queries as the backend runs them.

    python benchmarks/vlm_size.py [--size 7b|32b|tiny] [--batch-sizes 1,4,8,16] [--attn sdpa,flash_attention_2]
                                  [--n 32] [--side 1024] [--max-pixels 1003520] [--device cuda] [--json FILE]

No checkpoint can be downloaded, so the model is built from the configuration (text: hidden 3584,
28 layers, 28 heads, 4 KV heads, MLP 18944, vocabulary 152064; vision: 32 blocks of 1280, window
attention with full attention at blocks 7, 15, 23, 31; 32B: hidden 5120, 64 layers, 40 heads, 8 KV
heads, MLP 27648) directly on the device in bf16, with the small offline tokenizer and Qwen's
image processor of tests/tiny_vlm.py (token ids are all the model needs). Answers are forced to
fixed well-formed texts of typical length (query 1 about 150 tokens with two boxes, query 2 about
200), so every image runs both queries at the same cost; the score still comes from the model's
own logits. For each attention implementation installed and each batch size: images/s, seconds
per image for each query, the share of the time inside generate() (the rest is the backend's CPU
work: the processor, cropping, parsing), the GPU's utilisation (nvidia-smi) and peak memory.

--size tiny --device cpu is a dry run of this script on a machine without a GPU, not a measurement.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402
from gpu_pipeline import GpuSampler  # noqa: E402

SHAPES = {
    "7b": {"text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000,
                        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
           "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                          window_size=112, fullatt_block_indexes=[7, 15, 23, 31])},
    "32b": {"text": dict(hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
                         num_key_value_heads=8, vocab_size=152064, max_position_embeddings=128000,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
            "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=5120,
                           window_size=112, fullatt_block_indexes=[7, 15, 23, 31])},
    "tiny": {"text": {}, "vision": {}},
}
WORDS = ("the texture near the top repeats and the edges of the fence look too smooth while the grass "
         "shows the same blades twice in a row").split()


def _answer(tokenizer, head: str, tail: str, tokens: int) -> str:
    """head + filler words + tail, about `tokens` tokens long."""
    words, k = [], 0
    while len(tokenizer.encode(" ".join([head, *words, tail]), add_special_tokens=False)) < tokens:
        words.append(WORDS[k % len(WORDS)])
        k += 1
    return " ".join([head, *words, tail])


def big_model(folder: Path, size: str, device: str, attn: str):
    """The checkpoint's architecture at the paper's size, random weights, built on the device in bf16."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration
    cfg = AutoConfig.from_pretrained(folder)
    for k, v in SHAPES[size]["text"].items():
        setattr(cfg.text_config, k, v)
    for k, v in SHAPES[size]["vision"].items():
        setattr(cfg.vision_config, k, v)
    cfg._attn_implementation = attn
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="7b", choices=SHAPES)
    ap.add_argument("--batch-sizes", default="1,4,8,16")
    ap.add_argument("--attn", default="sdpa,flash_attention_2", help="attention implementations to try "
                    "(those not installed are reported and skipped)")
    ap.add_argument("--n", type=int, default=32, help="images per measurement")
    ap.add_argument("--side", type=int, default=1024, help="long side of each JPEG")
    ap.add_argument("--max-pixels", type=int, default=1024 * 980, help="the scan view's pixel budget in the "
                    "processor (about 1,250 visual tokens at the default)")
    ap.add_argument("--scan-tokens", type=int, default=150)
    ap.add_argument("--zoom-tokens", type=int, default=200)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import torch
    from transformers import LogitsProcessorList

    from tests.tiny_vlm import Script, build_qwen
    from zoomin_core import ExamineConfig, ImageInput, load_backend
    from zoomin_core.decode import prepare
    from zoomin_core.stages import examine
    figures: dict = {"size": a.size, "device": a.device, "n": a.n, "side": a.side, "max_pixels": a.max_pixels,
                     "gpu": torch.cuda.get_device_name(0) if a.device == "cuda" else "none", "runs": []}
    with tempfile.TemporaryDirectory() as d:
        folder = build_qwen(Path(d) / "qwen2_5_vl")
        paths = large_jpegs(Path(d) / "imgs", a.n, a.side)
        prepared = [prepare(ImageInput(str(p), p.read_bytes()), ExamineConfig().decode) for p in paths]
        for attn in a.attn.split(","):
            try:
                model = big_model(folder, a.size, a.device, attn)
            except (ImportError, ValueError) as e:   # e.g. flash_attention_2 not installed
                print(f"{attn}: not available here ({str(e).splitlines()[0][:160]})", flush=True)
                figures["runs"].append({"attn": attn, "unavailable": str(e).splitlines()[0]})
                continue
            params = sum(p.numel() for p in model.parameters())
            print(f"{a.size} ({params / 1e9:.2f}B parameters, {attn}) built on {a.device}", flush=True)
            for bs in [int(b) for b in a.batch_sizes.split(",")]:
                backend = load_backend("vlm", str(folder), device=a.device, batch_size=bs, max_pixels=a.max_pixels,
                                       max_new_tokens=max(a.scan_tokens, a.zoom_tokens) + 16)
                backend.model = model
                # the offline checkpoint's processor caps images at 224 px a side: lift it to the budget
                ip = backend.processor.image_processor
                if getattr(ip, "size", None) is not None:
                    ip.size["longest_edge"] = a.max_pixels
                else:
                    ip.max_pixels = a.max_pixels
                tok, eos = backend.tokenizer, model.generation_config.eos_token_id
                answers = {"scan": _answer(tok, "The fence repeats.", "<boxes>[[40, 40, 300, 260], [320, 80, 600, "
                                           "400]]</boxes> <verdict>generated</verdict>", a.scan_tokens),
                           "zoom": _answer(tok, "Crop 1 shows a tiled pattern.", "<verdict>generated</verdict>",
                                           a.zoom_tokens)}
                backend.generate_hook = lambda q, k: {"logits_processor": LogitsProcessorList(
                    [Script(tok, [answers[q]] * k, eos)])}
                generate, in_generate = model.generate, [0.0]

                def timed(*args, **kw):
                    t0 = time.perf_counter()
                    out = generate(*args, **kw)
                    if a.device == "cuda":
                        torch.cuda.synchronize()
                    in_generate[0] += time.perf_counter() - t0
                    return out
                model.generate = timed
                examine(backend, prepared[:bs])   # warm-up: kernels, allocator
                backend.tokens_generated = {"scan": 0, "zoom": 0}
                backend.trace.clear()
                in_generate[0] = 0.0
                if a.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                with GpuSampler() as gpu:
                    rows = []
                    for i in range(0, len(prepared), bs):
                        rows += examine(backend, prepared[i:i + bs])
                seconds = time.perf_counter() - t0
                model.generate = generate
                ok = sum(r.status == "ok" for r in rows)
                # visual tokens per image of each query, from the sizes the backend gave the processor
                vis = {q: [sum(w * h for w, h in imgs) / 784 for t in backend.trace if t["query"] == q
                           for imgs in t["sizes"]] for q in ("scan", "zoom")}
                run = {"attn": attn, "batch_size": bs, "images_per_s": a.n / seconds, "ok": ok,
                       "scan_s_per_image": sum(r.scan_s or 0 for r in rows) / a.n,
                       "zoom_s_per_image": sum(r.zoom_s or 0 for r in rows) / a.n,
                       "share_in_generate": in_generate[0] / seconds,
                       "scan_tokens_per_image": backend.tokens_generated["scan"] / a.n,
                       "zoom_tokens_per_image": backend.tokens_generated["zoom"] / a.n,
                       "visual_tokens_scan": sum(vis["scan"]) / max(1, len(vis["scan"])),
                       "visual_tokens_zoom": sum(vis["zoom"]) / max(1, len(vis["zoom"])),
                       "gpu_utilisation_pct": gpu.mean,
                       "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if a.device == "cuda" else None}
                figures["runs"].append(run)
                print(f"  batch {bs:3d}: {run['images_per_s']:6.2f} images/s, scan {run['scan_s_per_image']:.2f} s + "
                      f"zoom {run['zoom_s_per_image']:.2f} s per image, {run['share_in_generate']:.0%} in generate(), "
                      f"tokens out {run['scan_tokens_per_image']:.0f}+{run['zoom_tokens_per_image']:.0f}, visual tokens in "
                      f"{run['visual_tokens_scan']:.0f}+{run['visual_tokens_zoom']:.0f}, ok {ok}/{a.n}, "
                      f"GPU busy {'n/a' if gpu.mean is None else f'{gpu.mean:.0f}%'}, peak "
                      f"{'n/a' if run['peak_gpu_gib'] is None else '%.1f GiB' % run['peak_gpu_gib']}", flush=True)
            del model
            if a.device == "cuda":
                torch.cuda.empty_cache()
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
