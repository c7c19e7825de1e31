"""Model families of the `vlm` backend: each family's quirks, in one place per family.

A family says how to load its processor without a video stack, which frame its boxes are
written in, how to shape an image before the processor sees it (so that the frame is known
exactly), and how the prompt names that frame.

  qwen2_5_vl  Qwen2.5-VL: absolute pixels of the image as the model saw it (after its resize to
              multiples of 28 within the pixel budget). We do that resize ourselves.
  qwen2_vl    Qwen2-VL: coordinates normalised to 0..1000.
  llava       LLaVA-style (AutoModelForImageTextToText): the processor crops to a square, so
              the image is padded to a square first (LLaVA-1.5's "pad" mode); boxes are
              normalised to 0..1 of that square.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

class CheckpointError(Exception):
    """The checkpoint folder or prompt file is missing or incomplete."""


# Files a checkpoint folder must hold, whatever the family.
REQUIRED = ("config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def missing_files(names: list[str]) -> list[str]:
    """What a checkpoint folder listing lacks (empty when it looks complete)."""
    base = {n.rsplit("/", 1)[-1] for n in names}
    out = [f for f in REQUIRED if f not in base]
    if not any(n.endswith(".safetensors") for n in base):
        out.append("*.safetensors (only safetensors weights are loaded)")
    if not any(f in base for f in TOKENIZER_FILES):
        out.append("a tokenizer (tokenizer.json)")
    return out


@dataclass(frozen=True)
class Shaped:
    """An image as handed to the processor, and how its box frame maps back to the input."""
    image: Image.Image
    frame_w: float          # the box frame's extent (pixels, 1000 or 1)
    frame_h: float
    scale_x: float          # input pixels per frame unit
    scale_y: float
    off_x: float = 0.0      # input pixels to subtract after scaling (padding)
    off_y: float = 0.0

    def to_input(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = box
        return (x1 * self.scale_x - self.off_x, y1 * self.scale_y - self.off_y,
                x2 * self.scale_x - self.off_x, y2 * self.scale_y - self.off_y)


class Family:
    name = ""
    model_types: tuple[str, ...] = ()
    frame_text = ""

    def load_processor(self, path: str):
        raise NotImplementedError

    def shape(self, pixels: np.ndarray, processor, max_pixels: int | None) -> Shaped:
        raise NotImplementedError

    def frame_words(self, s: Shaped) -> str:
        return self.frame_text.format(w=int(s.frame_w), h=int(s.frame_h))


class _Qwen(Family):
    def load_processor(self, path: str):
        # The stock processor loads a video processor that needs torchvision; images need none of
        # it, so build the image-only processor (works with and without torchvision installed).
        from transformers import AutoImageProcessor, AutoTokenizer
        tok = AutoTokenizer.from_pretrained(path)
        ip = AutoImageProcessor.from_pretrained(path)
        return _image_only(self.name)(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)

    @staticmethod
    def _budget(processor, max_pixels: int | None) -> tuple[int, int, int]:
        ip = processor.image_processor
        size = getattr(ip, "size", None) or {}
        lo = getattr(ip, "min_pixels", None) or size.get("shortest_edge") or 56 * 56
        hi = max_pixels or getattr(ip, "max_pixels", None) or size.get("longest_edge") or 1280 * 28 * 28
        return int(lo), int(hi), int(ip.patch_size * ip.merge_size)

    def _resized(self, pixels: np.ndarray, processor, max_pixels: int | None) -> tuple[Image.Image, int, int]:
        h, w = pixels.shape[:2]
        lo, hi, factor = self._budget(processor, max_pixels)
        rh, rw = smart_resize(h, w, factor=factor, min_pixels=lo, max_pixels=max(hi, lo))
        return Image.fromarray(pixels).resize((rw, rh), Image.Resampling.BICUBIC), rw, rh


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen-VL's resize rule: sides multiples of `factor`, area within [min, max], aspect kept.
    (transformers defines it in a module that needs torchvision, so it is restated here.)"""
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _image_only(name: str):
    """The family's stock processor without its video part. transformers derives a processor's
    parts from its __init__ signature, so the subclass's signature names only image and text."""
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin
    base = Qwen2_5_VLProcessor if name == "qwen2_5_vl" else Qwen2VLProcessor

    class ImageOnlyProcessor(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = (getattr(tokenizer, "image_token_id", None)
                                   or tokenizer.convert_tokens_to_ids(self.image_token))
            self.video_token_id = (getattr(tokenizer, "video_token_id", None)
                                   or tokenizer.convert_tokens_to_ids(self.video_token))
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyProcessor


class Qwen25VL(_Qwen):
    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    frame_text = "pixel coordinates of this {w}x{h} image"

    def shape(self, pixels, processor, max_pixels=None) -> Shaped:
        im, rw, rh = self._resized(pixels, processor, max_pixels)
        h, w = pixels.shape[:2]
        return Shaped(im, rw, rh, w / rw, h / rh)


class Qwen2VL(_Qwen):
    name = "qwen2_vl"
    model_types = ("qwen2_vl",)
    frame_text = "coordinates from 0 to 1000 across the image's width and height"

    def shape(self, pixels, processor, max_pixels=None) -> Shaped:
        im, _, _ = self._resized(pixels, processor, max_pixels)
        h, w = pixels.shape[:2]
        return Shaped(im, 1000.0, 1000.0, w / 1000.0, h / 1000.0)


class Llava(Family):
    name = "llava"
    model_types = ("llava", "llava_next", "llava_onevision")
    frame_text = "coordinates from 0 to 1 across the image's width and height"

    def load_processor(self, path: str):
        from transformers import AutoProcessor
        return AutoProcessor.from_pretrained(path)

    def shape(self, pixels, processor, max_pixels=None) -> Shaped:
        h, w = pixels.shape[:2]
        side = max(h, w)
        mean = tuple(int(c) for c in pixels.reshape(-1, 3).mean(axis=0))
        canvas = Image.new("RGB", (side, side), mean)
        ox, oy = (side - w) // 2, (side - h) // 2
        canvas.paste(Image.fromarray(pixels), (ox, oy))
        return Shaped(canvas, 1.0, 1.0, float(side), float(side), float(ox), float(oy))


FAMILIES: dict[str, Family] = {f.name: f for f in (Qwen25VL(), Qwen2VL(), Llava())}


def family_for(model_type: str) -> Family:
    for f in FAMILIES.values():
        if model_type in f.model_types:
            return f
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise ValueError(f"model type {model_type!r} is not supported by the vlm backend; supported: {', '.join(known)}")
