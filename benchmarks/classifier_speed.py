"""The classifier backend against the compact backend on the same images, and what the tile scan
costs as its tiles get smaller (more of them per image).

    python benchmarks/classifier_speed.py [--n 16] [--side 1536] [--arch vit-s] [--model DIR] [--device cpu]

Without --model a checkpoint of the size public AI-image detectors come in is built with random
weights (speed does not depend on what the weights learned): ViT-S/16 or ConvNeXt-T at 224 px,
two classes. One process (`zoomin_core.stages.examine`), batches of 8 images, images decoded
once beforehand, so the figures are the model stages alone. On a GPU pass --device cuda (bf16).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import large_jpegs  # noqa: E402

from zoomin_core import ExamineConfig, ImageInput, load_backend  # noqa: E402
from zoomin_core.backends.classifier import MAX_TILES, TILE_OVERLAP, scan_side  # noqa: E402
from zoomin_core.decode import DecodeConfig, prepare  # noqa: E402
from zoomin_core.geometry import tiles  # noqa: E402
from zoomin_core.stages import examine  # noqa: E402


def build(arch: str, folder: Path) -> Path:
    import torch
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessorPil, ViTConfig,
                              ViTForImageClassification, ViTImageProcessorPil)
    torch.manual_seed(0)
    labels = {"num_labels": 2, "id2label": {0: "real", 1: "fake"}, "label2id": {"real": 0, "fake": 1}}
    if arch == "vit-s":
        model = ViTForImageClassification(ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                                    intermediate_size=1536, **labels))
        proc = ViTImageProcessorPil(size={"height": 224, "width": 224})
    else:
        model = ConvNextForImageClassification(ConvNextConfig(**labels))   # ConvNeXt-T
        proc = ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def timed(backend, prepared, ex: ExamineConfig) -> tuple[float, list]:
    t0 = time.perf_counter()
    rows = []
    for i in range(0, len(prepared), 8):
        rows += examine(backend, prepared[i:i + 8], ex)
    return time.perf_counter() - t0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--side", type=int, default=1536, help="long side of the test JPEGs")
    ap.add_argument("--arch", default="vit-s", choices=("vit-s", "convnext-t"))
    ap.add_argument("--model", default=None, help="a classifier checkpoint folder (default: built, see above)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiles", default="4,16,36,64,144", help="--max-tiles values of the tile-size sweep")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model = a.model or str(build(a.arch, Path(d) / a.arch))
        inputs = [ImageInput(str(p), p.read_bytes()) for p in large_jpegs(Path(d) / "img", a.n, a.side)]
        clf = load_backend("classifier", model, device=a.device)
        compact = load_backend("compact", device=a.device)
        side = clf.pre.side
        print(f"{a.n} JPEGs, long side {a.side} px; {clf.model_id} (input {side} px, "
              f"{sum(p.numel() for p in clf.model.parameters()) / 1e6:.1f}M parameters) on {a.device}\n")

        def prepared(view: int):
            return [prepare(i, DecodeConfig(view_max_side=view)) for i in inputs]

        # 1. The two backends on the same images, each at its default scan view.
        print("backend                 view   scan+zoom s/image  images/s   scan only s/image")
        base = None
        for name, backend, view in (("compact", compact, DecodeConfig.view_max_side),
                                    ("classifier", clf, scan_side(side))):
            ps = prepared(view)
            timed(backend, ps[:2], ExamineConfig())   # warm-up
            full, _ = timed(backend, ps, ExamineConfig(decode=DecodeConfig(view_max_side=view)))
            scan, _ = timed(backend, ps, ExamineConfig(stages="scan", decode=DecodeConfig(view_max_side=view)))
            base = base or full
            print(f"{name:<22} {view:>5}   {full / a.n:>17.3f}  {a.n / full:>8.2f}   {scan / a.n:>17.3f}"
                  f"   ({full / base:.1f}x compact's time)")

        # 2. The tile scan as its tiles shrink: --max-tiles sets how many cover an image, the
        #    view side follows (scan_side), so the tile side in original pixels is what moves.
        print("\n--max-tiles  view  tiles/image  tile side (original px)  scan s/image  zoom s/image  images/s")
        for cap in (int(t) for t in a.tiles.split(",")):
            view = scan_side(side, cap, TILE_OVERLAP)
            backend = load_backend("classifier", model, device=a.device, max_tiles=cap)
            ps = prepared(view)
            ex = ExamineConfig(decode=DecodeConfig(view_max_side=view))
            scan, _ = timed(backend, ps, ExamineConfig(stages="scan", decode=ex.decode))
            full, rows = timed(backend, ps, ex)
            n_tiles = [len(tiles(*p.view.size, side, TILE_OVERLAP, cap)) for p in ps]
            orig = sum(p.view.scale_x * side for p in ps) / len(ps)
            mark = "  (default)" if cap == MAX_TILES else ""
            print(f"{cap:>11}  {view:>4}  {sum(n_tiles) / len(ps):>11.1f}  {orig:>23.0f}  {scan / a.n:>12.3f}  "
                  f"{(full - scan) / a.n:>12.3f}  {a.n / full:>8.2f}{mark}")


if __name__ == "__main__":
    main()
