"""Backend `classifier`: any Hugging Face image classifier (AutoModelForImageClassification) run
through the method's two stages, so a one-number detector gains regions and full-resolution evidence.

scan: the whole image at the checkpoint's input size gives the first score; tiles of the scan
      view at the input size (larger ones, resized, when an image would need more than
      `max_tiles`) give a suspicion map; tiles at or over the threshold, joined where they
      overlap, are the regions (none: the single most suspicious tile).
zoom: each region's crop, cut from the full-resolution original, is scored on native-resolution
      tiles at the input size, overlapping as the scan's (at most `zoom_tiles`, spread evenly over
      larger crops, so a trace is never split between two tiles of a crop that fits); a region's
      score is its highest tile's. Final score: the highest look, the whole image or a region,
      because a classifier that sees an edited region only up close should not be outvoted by
      the rest of the picture. The threshold (--threshold, default 0.5) turns it into a verdict.
Images and tiles of a batch run through the model together, `chunk` inputs per forward pass.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .. import geometry, rationale
from ..records import GENERATED, REAL, Box, Crop, ScanResult, Verdict, View
from .classifier_checkpoint import REQUIRED, LabelMap, Preprocess, missing, parse
from .vlm_families import CheckpointError

log = logging.getLogger(__name__)

MAX_TILES = 64        # scan tiles per image (over it, tiles grow)
TILE_OVERLAP = 0.5    # neighbouring scan tiles share half a side
ZOOM_TILES = 9        # native-resolution tiles per zoomed region (over it, spread with gaps)


def scan_side(input_side: int, max_tiles: int = MAX_TILES, overlap: float = TILE_OVERLAP) -> int:
    """The scan view's longest side at which a square image needs exactly `max_tiles` tiles of the
    input size: smaller images are tiled at full resolution, larger ones are reduced to it."""
    n = max(1, int(np.sqrt(max_tiles)))
    return int(round(input_side * (1 + (n - 1) * (1 - overlap))))


def read_checkpoint(path: str, generated_labels: Sequence[str] = ()) -> tuple[dict, LabelMap, Preprocess]:
    """config, labels and preprocessing of a local checkpoint folder; CheckpointError naming
    what is missing or cannot be read."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"--model {path}: the classifier backend needs a checkpoint folder (config.json, "
                              "preprocessor_config.json, *.safetensors), as save_pretrained writes it")
    lacking = missing([f.name for f in p.iterdir() if f.is_file()])
    if lacking:
        raise CheckpointError(f"--model {path}: incomplete checkpoint, missing {'; '.join(lacking)}")
    try:
        texts = {name: (p / name).read_text() for name in REQUIRED}
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"--model {path}: cannot read it ({e})") from None
    return parse(texts, generated_labels, f"--model {path}: ")


class ClassifierBackend:
    name = "classifier"

    def __init__(self, model: Optional[str] = None, generated_labels: Sequence[str] = (), device: str = "cpu",
                 dtype: str = "auto", threshold: Optional[float] = None, max_boxes: int = 4,
                 max_tiles: int = MAX_TILES, tile_overlap: float = TILE_OVERLAP, zoom_tiles: int = ZOOM_TILES,
                 chunk: Optional[int] = None, threads: Optional[int] = None, model_name: Optional[str] = None):
        import torch
        from transformers import AutoModelForImageClassification
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()   # a "Loading weights" bar per actor says nothing in a job's log
        if model is None:
            raise CheckpointError("the classifier backend needs --model: a checkpoint folder, local or s3://")
        if threads:
            torch.set_num_threads(threads)
        config, self.labels, self.pre = read_checkpoint(model, generated_labels)
        self.device = torch.device(device)
        # auto: bf16 on GPUs (the logits are read in fp32), fp32 on CPU (bf16 matmuls are slow on most CPUs).
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()   # its load report is a table; what matters is said below, in one line
        try:
            self.model, info = AutoModelForImageClassification.from_pretrained(
                model, dtype=self.dtype, use_safetensors=True, output_loading_info=True)
        except RuntimeError as e:
            if "mismatched" not in str(e) and "size mismatch" not in str(e):
                raise
            raise CheckpointError(f"--model {model}: the weights do not fit config.json: some tensors have other "
                                  f"shapes (config.json names {len(self.labels.names)} classes; does the "
                                  "classification head have as many outputs?)") from None
        finally:
            hf_logging.set_verbosity(level)
        self.model = self.model.to(self.device).eval()
        if info.get("missing_keys"):   # transformers would fill them with random values
            keys = sorted(info["missing_keys"])
            raise CheckpointError(f"--model {model}: the weights lack {len(keys)} of the model's tensors "
                                  f"({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}): an incomplete or "
                                  "another model's checkpoint")
        out = int(getattr(self.model.config, "num_labels", len(self.labels.names)))
        if out != len(self.labels.names):
            raise CheckpointError(f"--model {model}: config.json names {len(self.labels.names)} classes, the model "
                                  f"has {out} outputs")
        self.threshold = 0.5 if threshold is None else float(threshold)
        self.point = "--threshold" if threshold is not None else ""
        self.max_boxes, self.max_tiles, self.overlap = max_boxes, max_tiles, tile_overlap
        # inputs per forward pass: a GPU wants large batches; on a CPU larger ones only cost memory
        self.zoom_tiles, self.chunk = zoom_tiles, max(1, chunk or (256 if self.device.type == "cuda" else 64))
        self._model_name = model_name or Path(model.rstrip("/")).name
        self._type = str(config.get("model_type", "unknown"))
        log.info("classifier %s (%s): input %dx%d, %s", self._model_name, self._type, self.pre.height,
                 self.pre.width, self.labels.describe())

    @property
    def model_id(self) -> str:
        return f"classifier/{self._type}/{self._model_name}"

    # ---- the model --------------------------------------------------------------------------

    def looks(self, inputs: Sequence[tuple[np.ndarray, Optional[Box], bool]]) -> tuple[np.ndarray, list[Optional[str]]]:
        """P(generated) and the most likely generator (multi-class checkpoints) of each input:
        (pixels, tile box or None for all of them, whole=True: the checkpoint's own resize and crop).
        Inputs are prepared `chunk` at a time, so memory stays bounded however many tiles."""
        import torch
        p = np.zeros(len(inputs))
        names: list[Optional[str]] = [None] * len(inputs)
        for start in range(0, len(inputs), self.chunk):
            part = inputs[start:start + self.chunk]
            arrays = [self.pre.image(px) if whole else self.pre.tile(_cut(px, b)) for px, b, whole in part]
            x = torch.from_numpy(np.stack(arrays)).to(self.device, self.dtype)
            with torch.inference_mode():
                logits = self.model(pixel_values=x).logits.float().cpu().numpy().astype(np.float64)
            if not np.isfinite(logits).all():   # broken weights, or an overflow in half precision
                raise RuntimeError("the classifier returned non-finite logits (NaN or inf)")
            p[start:start + len(part)], top = _p_generated(logits, self.labels)
            for j, k in enumerate(top):
                names[start + j] = None if k is None else self.labels.names[k]
        return p, names

    # ---- the two stages ---------------------------------------------------------------------

    def scan(self, views: Sequence[View]) -> list[ScanResult]:
        grids = [geometry.tiles(*v.size, self.pre.side, self.overlap, self.max_tiles) for v in views]
        inputs = []
        for v, grid in zip(views, grids):
            inputs.append((v.pixels, None, True))
            inputs.extend((v.pixels, b, False) for b in grid)
        p, _ = self.looks(inputs)
        out, at = [], 0
        for v, grid in zip(views, grids):
            whole, tile_p, at = float(p[at]), p[at + 1:at + 1 + len(grid)], at + 1 + len(grid)
            scored = [Box(b.x1, b.y1, b.x2, b.y2, float(s)) for b, s in zip(grid, tile_p)]
            boxes = hot_regions(scored, self.threshold)[: self.max_boxes]
            hot = int(sum(s >= self.threshold for s in tile_p))
            verdict = GENERATED if whole >= self.threshold else REAL
            side = round(max(grid[0].width * v.scale_x, grid[0].height * v.scale_y)) if grid else 0
            out.append(ScanResult(tuple(boxes), verdict, whole, rationale.classifier_scan_explanation(
                whole, self.threshold, hot, len(grid), side)))
        return out

    def zoom(self, items: Sequence[tuple[View, Sequence[Crop], ScanResult]]) -> list[Verdict]:
        inputs, spans = [], []
        for view, crops, _ in items:
            inputs.append((view.pixels, None, True))   # the whole again: its generator, for the rationale
            per = []
            for c in crops:
                grid = geometry.tiles(c.pixels.shape[1], c.pixels.shape[0], self.pre.side, self.overlap,
                                      self.zoom_tiles, grow=False)
                inputs.extend((c.pixels, b, False) for b in grid)
                per.append(len(grid))
            spans.append(per)
        p, names = self.looks(inputs)
        out, at = [], 0
        for (view, crops, scan), per in zip(items, spans):
            looks = [(float(p[at]), names[at])]
            whole, at = float(p[at]), at + 1
            regions = []
            for c, n in zip(crops, per):
                k = at + int(np.argmax(p[at:at + n]))
                regions.append((geometry.to_int(c.region or c.box), float(p[k]), n))
                looks.append((float(p[k]), names[k]))
                at += n
            score, generator = max(looks, key=lambda t: t[0])
            verdict = GENERATED if score >= self.threshold else REAL
            text = rationale.classifier_rationale(regions, verdict, score, whole, self.threshold, self.point,
                                                  generator if self.labels.generators else None)
            out.append(Verdict(verdict, score, text, tuple(s for _, s, _ in regions)))
        return out


def _cut(pixels: np.ndarray, b: Optional[Box]) -> np.ndarray:
    return pixels if b is None else pixels[int(b.y1):int(b.y2), int(b.x1):int(b.x2)]


def _p_generated(logits: np.ndarray, labels: LabelMap) -> tuple[np.ndarray, list[Optional[int]]]:
    """P(generated) per row of logits, and the most likely generated class (when several)."""
    gen = list(labels.generated)
    if labels.mode == "single":
        s = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return (s if gen else 1.0 - s), [None] * len(logits)
    if labels.mode == "sigmoid":
        probs = 1.0 / (1.0 + np.exp(-logits))
        p = probs[:, gen].max(axis=1)
    else:
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        p = probs[:, gen].sum(axis=1)
    top = [gen[int(i)] for i in probs[:, gen].argmax(axis=1)] if len(gen) > 1 else [None] * len(logits)
    return np.clip(p, 0.0, 1.0), top


def hot_regions(tiles: Sequence[Box], threshold: float) -> list[Box]:
    """Tiles scoring at or over the threshold, joined where they overlap or touch, as boxes scored
    by their best tile, best first; none hot: the single highest tile, so the zoom still looks
    at the most suspicious place."""
    hot = [t for t in tiles if t.score >= threshold]
    if not hot:
        return [max(tiles, key=lambda t: t.score)] if tiles else []
    parent = list(range(len(hot)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(hot):
        for j in range(i + 1, len(hot)):
            b = hot[j]
            if a.x1 <= b.x2 and b.x1 <= a.x2 and a.y1 <= b.y2 and b.y1 <= a.y2:
                parent[root(i)] = root(j)
    groups: dict[int, list[Box]] = {}
    for i, t in enumerate(hot):
        groups.setdefault(root(i), []).append(t)
    boxes = [Box(min(t.x1 for t in g), min(t.y1 for t in g), max(t.x2 for t in g), max(t.y2 for t in g),
                 max(t.score for t in g)) for g in groups.values()]
    return sorted(boxes, key=lambda b: -b.score)
