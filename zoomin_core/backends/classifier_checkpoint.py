"""What an image-classifier checkpoint must hold, which of its classes mean generated, and its
own preprocessing, read from its two JSON files (no torchvision, no image processor objects).

A checkpoint folder as `save_pretrained` writes it: config.json (architecture, id2label),
*.safetensors (weights; pickled .bin files are never loaded) and preprocessor_config.json (input
size, resize mode, mean and std). Everything here works on the files' parsed contents, so the
job can check a checkpoint in object storage before any image is read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .vlm_families import CheckpointError

REQUIRED = {"config.json": "config.json (architecture and labels)",
            "preprocessor_config.json": "preprocessor_config.json (input size, mean and std)"}

# Words in a class name that say what it means. A name is split into lower-case words at any
# non-letter and at camelCase joins ("AI_Generated" -> ai, generated; "aiGenerated" too).
GENERATED_WORDS = {"fake", "fakes", "artificial", "ai", "aigc", "aigenerated", "generated", "synthetic",
                   "deepfake", "deepfakes", "sd", "gan", "diffusion", "manipulated", "machine"}
REAL_WORDS = {"real", "reals", "human", "natural", "nature", "authentic", "genuine", "pristine", "bonafide",
              "nonai", "notai"}
# Words that say real only next to no generated word ("photo" is real, "ai_photo" is generated).
WEAK_REAL_WORDS = {"photo", "photograph", "photos", "original", "camera"}
NEGATIONS = {"not", "non", "no"}   # "not_ai", "non-ai", "no ai": real

# Defaults of transformers' processor classes where they differ from the common ones: older
# checkpoints' preprocessor_config.json leave them out. Keyed by the class name's stem.
CLASS_DEFAULTS = {"ConvNext": {"crop_pct": 224 / 256, "resample": 3, "size_is_shortest": True},
                  "EfficientNet": {"include_top": True, "resample": 3},
                  "Deit": {"resample": 3}, "Swin": {"resample": 3}, "Beit": {"resample": 3}}


def _words(label: str) -> list[str]:
    label = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)
    return re.findall(r"[a-z0-9]+", label.lower())


def meaning(label: str) -> Optional[str]:
    """'generated', 'real', 'both' (contradictory) or None (not a name this knows)."""
    words = _words(label)
    gen, real = any(w in GENERATED_WORDS for w in words), any(w in REAL_WORDS for w in words)
    if gen and any(w in NEGATIONS for w in words):
        gen, real = False, True
    real = real or (not gen and any(w in WEAK_REAL_WORDS for w in words))
    return "both" if gen and real else "generated" if gen else "real" if real else None


@dataclass(frozen=True)
class LabelMap:
    """Which output classes are generated. mode: 'softmax' (classes exclude each other; the
    generated ones' probabilities are summed), 'sigmoid' (independent classes: the most likely
    generated one counts) or 'single' (one logit: P(names[0]))."""
    names: tuple[str, ...]
    generated: tuple[int, ...]
    mode: str = "softmax"

    @property
    def real(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.names)) if i not in self.generated)

    @property
    def generators(self) -> bool:
        """One class per generator: the rationale names the most likely one."""
        return len(self.generated) > 1

    def describe(self) -> str:
        if self.mode == "single":
            return f"one output, P({self.names[0]}) = " + ("P(generated)" if self.generated else "P(real)")
        return (f"generated = {', '.join(self.names[i] for i in self.generated)}; "
                f"real = {', '.join(self.names[i] for i in self.real)}")


def label_map(config: dict, generated_labels: Sequence[str] = (), where: str = "") -> LabelMap:
    """The LabelMap of a checkpoint's config.json, or CheckpointError naming its labels."""
    raw = config.get("id2label") or {}
    try:
        n = int(config.get("num_labels") or len(raw) or 2)
        names = tuple(str(raw.get(str(i), raw.get(i, f"LABEL_{i}"))) for i in range(n))
    except (TypeError, ValueError, AttributeError):
        raise CheckpointError(f"{where}config.json: id2label is not a map of class ids to names "
                              f"({raw!r:.200})") from None
    listed = ", ".join(repr(x) for x in names)
    independent = config.get("problem_type") == "multi_label_classification"
    mode = "single" if n == 1 else "sigmoid" if independent else "softmax"
    if generated_labels:
        lower = {x.lower(): i for i, x in enumerate(names)}
        unknown = [g for g in generated_labels if g.lower() not in lower]
        if unknown:
            raise CheckpointError(f"--generated-labels {','.join(unknown)}: not a class of this checkpoint "
                                  f"(its classes: {listed})")
        gen = tuple(sorted({lower[g.lower()] for g in generated_labels}))
        if len(gen) == n and n > 1:
            raise CheckpointError(f"--generated-labels names every class ({listed}): at least one must mean real")
        return LabelMap(names, gen, mode)
    meanings = [meaning(x) for x in names]
    hint = "; say which classes mean generated with --generated-labels NAME[,NAME...]"
    if "both" in meanings:
        raise CheckpointError(f"{where}class {names[meanings.index('both')]!r} reads as both real and generated "
                              f"(classes: {listed}){hint}")
    if mode == "single":
        if meanings[0] is None:
            raise CheckpointError(f"{where}its one output class {names[0]!r} says neither real nor generated{hint}")
        return LabelMap(names, (0,) if meanings[0] == "generated" else (), mode)
    gen = tuple(i for i, m in enumerate(meanings) if m == "generated")
    real = [i for i, m in enumerate(meanings) if m == "real"]
    unknown = [i for i, m in enumerate(meanings) if m is None]
    if real and gen and not unknown:
        return LabelMap(names, gen, mode)
    if real and unknown and not gen:
        # real vs one class per generator ("real", "midjourney", "sdxl", ...): the others are generators.
        return LabelMap(names, tuple(unknown), mode)
    raise CheckpointError(f"{where}cannot tell which classes mean generated (classes: {listed}){hint}")


def missing(names: Sequence[str]) -> list[str]:
    """What a checkpoint folder holding files `names` lacks, in words."""
    base = {n.rsplit("/", 1)[-1] for n in names}
    out = [what for f, what in REQUIRED.items() if f not in base]
    if not any(n.endswith(".safetensors") for n in base):
        bins = [n for n in base if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        out.append("*.safetensors weights" + (f" (found {', '.join(sorted(bins))}: pickled weights are never "
                                              "loaded; convert them with safetensors)" if bins else ""))
    return out


@dataclass(frozen=True)
class Preprocess:
    """The checkpoint's own preprocessing, as its preprocessor_config.json sets it (the keys of
    transformers' ViT, DeiT, BEiT, Swin, SigLIP, ConvNeXt/ResNet and EfficientNet processors)."""
    height: int                    # the model's input size
    width: int
    resize: Optional[tuple]        # ("exact", h, w) | ("shortest", side) | None (do_resize false)
    crop: Optional[tuple]          # (h, w) centre crop after resizing, or None
    resample: int
    scale: float
    offset: float                  # added after scaling (EfficientNet's rescale_offset: -1)
    mean: np.ndarray
    std: np.ndarray
    extra_std: bool = False        # EfficientNet's include_top: divided by std once more

    @staticmethod
    def from_config(d: dict, where: str = "") -> "Preprocess":
        def hw(v, what):
            if isinstance(v, (int, float)):
                return int(v), int(v)
            if isinstance(v, dict) and "height" in v and "width" in v:
                return int(v["height"]), int(v["width"])
            if isinstance(v, dict) and "shortest_edge" in v and "longest_edge" not in v:
                return int(v["shortest_edge"]), int(v["shortest_edge"])
            raise CheckpointError(f"{where}preprocessor_config.json: {what} {v!r} is not a size this version reads "
                                  "(an int, {height, width} or {shortest_edge})")
        kind = str(d.get("image_processor_type") or d.get("feature_extractor_type") or "")
        d = {**next((v for k, v in CLASS_DEFAULTS.items() if kind.startswith(k)), {}), **d}
        try:
            size = d.get("size", 224)
            h, w = hw(size, "size")
            shortest = (isinstance(size, dict) and "shortest_edge" in size
                        or isinstance(size, (int, float)) and d.get("size_is_shortest", False))
            crop_pct = d.get("crop_pct")
            resize: Optional[tuple] = None
            crop = None
            if d.get("do_resize", True):
                if not shortest:
                    resize = ("exact", h, w)
                elif crop_pct is not None:   # ConvNeXt/ResNet: under 384, resize to side/crop_pct, crop side
                    resize = (("shortest", int(h / float(crop_pct))) if h < 384 else ("exact", h, w))
                    crop = (h, w) if h < 384 else None
                else:
                    resize = ("shortest", h)
            if d.get("do_center_crop") and crop is None and crop_pct is None:
                h, w = crop = hw(d.get("crop_size", size), "crop_size")
            mean = np.asarray(d.get("image_mean", [0.5, 0.5, 0.5]), np.float32).reshape(-1)
            std = np.asarray(d.get("image_std", [0.5, 0.5, 0.5]), np.float32).reshape(-1)
            if not d.get("do_normalize", True):
                mean, std = np.zeros(3, np.float32), np.ones(3, np.float32)
            scale = float(d.get("rescale_factor", 1 / 255)) if d.get("do_rescale", True) else 1.0
            offset = -1.0 if d.get("rescale_offset") else 0.0
            extra = bool(d.get("include_top")) and bool(d.get("do_normalize", True))
            pre = Preprocess(h, w, resize, crop, int(d.get("resample", Image.Resampling.BILINEAR)), scale, offset,
                             np.broadcast_to(mean, 3).copy(), np.broadcast_to(std, 3).copy(), extra)
        except CheckpointError:
            raise
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{where}preprocessor_config.json: cannot read it "
                                  f"({type(e).__name__}: {e})") from None
        if min(h, w) < 8 or (pre.std == 0).any():
            raise CheckpointError(f"{where}preprocessor_config.json: input size {h}x{w} or std {pre.std} is unusable")
        return pre

    @property
    def side(self) -> int:
        """The tile side the scan cuts at native resolution: the input's longer side."""
        return max(self.height, self.width)

    def image(self, pixels: np.ndarray) -> np.ndarray:
        """A whole image as the checkpoint's processor prepares it: (3, height, width) float32."""
        im = Image.fromarray(pixels)
        if self.resize and self.resize[0] == "exact":
            im = im.resize((self.resize[2], self.resize[1]), self.resample)
        elif self.resize:
            s, (w, h) = self.resize[1], im.size
            # as transformers' get_resize_output_image_size(default_to_square=False)
            nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
            im = im.resize((nw, nh), self.resample)
        if self.crop:
            ch, cw = self.crop
            w, h = im.size
            top, left = (h - ch) // 2, (w - cw) // 2
            im = im.crop((left, top, left + cw, top + ch))   # pads with black when smaller, as theirs
        return self._normalise(np.asarray(im))

    def tile(self, pixels: np.ndarray) -> np.ndarray:
        """A tile cut by the scan or the zoom: resized straight to the input size (no centre crop:
        the tile is the region) and normalised."""
        if pixels.shape[:2] != (self.height, self.width):
            pixels = np.asarray(Image.fromarray(pixels).resize((self.width, self.height), self.resample))
        return self._normalise(pixels)

    def _normalise(self, a: np.ndarray) -> np.ndarray:
        x = a.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        x = (x - self.mean) / self.std
        if self.extra_std:
            x = x / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1))


def check_config(config: dict, where: str = "") -> None:
    """The config names an image classifier transformers can build, with a classification head:
    a backbone alone (ViTModel, a feature extractor) would get a random head and random verdicts."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as KNOWN
    kind = config.get("model_type")
    if kind not in KNOWN:
        raise CheckpointError(f"{where}model_type {kind!r} is not an image classifier this transformers can load "
                              f"(AutoModelForImageClassification knows: {', '.join(sorted(KNOWN))})")
    arch = config.get("architectures") or []
    if arch and not any("ImageClassification" in a for a in arch):
        raise CheckpointError(f"{where}it is a {', '.join(arch)}, not an image classifier: it has no classification "
                              "head (a backbone or another task's checkpoint)")


def parse(texts: dict, generated_labels: Sequence[str] = (), where: str = "") -> tuple[dict, LabelMap, Preprocess]:
    """config, labels and preprocessing from the two files' texts ({name: text})."""
    import json
    docs = {}
    for name in REQUIRED:
        try:
            docs[name] = json.loads(texts[name])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{where}{name} is not readable JSON ({e})") from None
        if not isinstance(docs[name], dict):
            raise CheckpointError(f"{where}{name} is not a JSON object")
    check_config(docs["config.json"], where)
    return (docs["config.json"], label_map(docs["config.json"], generated_labels, where),
            Preprocess.from_config(docs["preprocessor_config.json"], where))
