"""Tiny Hugging Face image classifiers built offline, as `save_pretrained` writes them.

`build(family, folder, labels)` makes a randomly initialised ViT, ConvNeXt, EfficientNet or ResNet
with its own processor config; `train_pattern(folder)` trains a tiny ResNet, inside the test run,
to tell photo patches with a planted pattern (a faint 2-pixel checkerboard) from plain ones:
a detector whose right answers are known in advance, for checking what the scan boxes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

SIDE = 32          # input size of every tiny checkpoint
PATTERN = 12       # side of the planted pattern, px


def _labels(labels: Sequence[str]) -> dict:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {n: i for i, n in enumerate(labels)}}


def build(family: str, folder: Path, labels: Sequence[str] = ("real", "fake"), seed: int = 0, **extra) -> Path:
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessorPil,
                              EfficientNetConfig, EfficientNetForImageClassification, EfficientNetImageProcessorPil,
                              ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification,
                              ViTImageProcessorPil)
    torch.manual_seed(seed)
    lab = {**_labels(labels), **extra}
    if family == "vit":
        model = ViTForImageClassification(ViTConfig(image_size=SIDE, patch_size=8, hidden_size=32,
                                                    num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=64, **lab))
        proc = ViTImageProcessorPil(size={"height": SIDE, "width": SIDE})
    elif family == "convnext":
        model = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
                                                              **lab))
        proc = ConvNextImageProcessorPil(size={"shortest_edge": SIDE}, crop_pct=0.875)
    elif family == "efficientnet":
        model = EfficientNetForImageClassification(EfficientNetConfig(image_size=SIDE, width_coefficient=0.1,
                                                                      depth_coefficient=0.1, hidden_dim=128, **lab))
        proc = EfficientNetImageProcessorPil(size={"height": SIDE, "width": SIDE})
    elif family == "resnet":   # as microsoft/resnet-50: ConvNeXt's processor (shortest edge, crop_pct)
        model = ResNetForImageClassification(ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                                          layer_type="basic", **lab))
        proc = ConvNextImageProcessorPil(size={"shortest_edge": SIDE}, crop_pct=0.875,
                                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    else:
        raise ValueError(family)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def plant(pixels: np.ndarray, x: int, y: int, side: int = PATTERN, amplitude: float = 60.0) -> np.ndarray:
    """The pattern: a 2-pixel checkerboard added at (x, y), the kind of period-2 trace a
    transposed-convolution decoder leaves; invisible once the image is resized."""
    out = pixels.astype(np.float32).copy()
    yy, xx = np.mgrid[0:side, 0:side]
    out[y:y + side, x:x + side] += (((xx + yy) % 2) * 2 - 1)[..., None] * amplitude / 2
    return np.clip(out, 0, 255).astype(np.uint8)


def photos(names: Sequence[str]) -> list[np.ndarray]:
    """Real photos shipped with scikit-image and scikit-learn (offline)."""
    from skimage import data
    out = []
    for n in names:
        if n in ("china", "flower"):
            from sklearn.datasets import load_sample_image
            out.append(load_sample_image(f"{n}.jpg"))
        else:
            out.append(getattr(data, n)()[..., :3])
    return out


def train_pattern(folder: Path, steps: int = 300, seed: int = 0) -> Path:
    """A tiny ResNet trained on 32 px patches of four photos, half with the pattern planted
    somewhere inside; labels real / fake. A few seconds on two cores."""
    build("resnet", folder, seed=seed)
    from transformers import ResNetForImageClassification

    from zoomin_core.backends.classifier_checkpoint import Preprocess
    import json
    pre = Preprocess.from_config(json.loads((folder / "preprocessor_config.json").read_text()))
    model = ResNetForImageClassification.from_pretrained(folder)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pics = photos(("astronaut", "chelsea", "coffee", "rocket"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        xs, ys = [], []
        for k in range(32):
            pic = pics[rng.integers(len(pics))]
            y0, x0 = rng.integers(0, pic.shape[0] - SIDE), rng.integers(0, pic.shape[1] - SIDE)
            patch = pic[y0:y0 + SIDE, x0:x0 + SIDE]
            label = k % 2
            if label:
                patch = plant(patch, *rng.integers(0, SIDE - PATTERN + 1, 2),
                              amplitude=float(rng.uniform(40, 80)))
            xs.append(pre.tile(patch))
            ys.append(label)
        loss = torch.nn.functional.cross_entropy(model(pixel_values=torch.from_numpy(np.stack(xs))).logits,
                                                 torch.tensor(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(folder)
    return folder
