"""`zoomin train` (the compact detector) and `zoomin train-consistency` (the self-consistency
check, real photos only): their flags and what they run. `cli.py` registers them."""
from __future__ import annotations

import sys

from zoomin_core.compact_model import RESIDUALS
from zoomin_core.decode import DecodeConfig
from zoomin_core.train import TrainConfig


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the compact detector",
                       description="Train on a `zoomin synth` set (LABELS) and/or your own folders. Splits: "
                                   "'train' fits the networks, 'calib' the score calibration; 'test' and "
                                   "'holdout' are evaluated and the figures stored in the weights.")
    p.add_argument("labels", nargs="?", default=None, help="labels.jsonl written by `zoomin synth`")
    p.add_argument("--real", default=None, help="folder of real images (your own labelled data)")
    p.add_argument("--generated", default=None, help="folder of generated images (your own labelled data)")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    p.add_argument("--version", default="custom", help="version string recorded in the weights and every output row")
    p.add_argument("--exclude-source", action="append", default=[],
                   help="leave this generator family (a label's 'source') out of training and calibration; repeatable")
    p.add_argument("--scan-steps", type=int, default=TrainConfig.scan_steps,
                   help=f"training steps of the scan network (default {TrainConfig.scan_steps})")
    p.add_argument("--zoom-steps", type=int, default=TrainConfig.zoom_steps,
                   help=f"training steps of the zoom network (default {TrainConfig.zoom_steps})")
    p.add_argument("--pseudo", type=float, default=TrainConfig.pseudo,
                   help="generator-agnostic regional fakes (a region blurred, resampled, re-noised, median-filtered "
                        "or re-compressed) added to training, per real training image; they teach the detector "
                        f"traces no one generator family has (default {TrainConfig.pseudo})")
    p.add_argument("--augment", type=float, default=TrainConfig.augment,
                   help="probability of each perturbation (noise, blur, re-compression) of a training patch, "
                        f"real or generated alike (default {TrainConfig.augment})")
    p.add_argument("--surprise-steps", type=int, default=TrainConfig.surprise_steps,
                   help="also train a model of real photos alone for this many steps (1500 measured; about 6 "
                        "minutes on 2 cores): a second opinion for the zoom that was never shown a generated image, "
                        f"for generators unlike the training ones; see README (default {TrainConfig.surprise_steps}: off)")
    p.add_argument("--view-size", type=int, default=DecodeConfig.view_max_side,
                   help="longest side of the reduced image the scan net learns on; scan with the same "
                        f"--view-size (default {DecodeConfig.view_max_side})")
    p.add_argument("--residual", choices=RESIDUALS, default=TrainConfig.residual,
                   help="what both nets see: 'plain', the high-pass residual, or 'local', that residual divided by "
                        f"its RMS over the surrounding 9x9 pixels (see README; default {TrainConfig.residual})")
    p.add_argument("--device", default="auto",
                   help="where the networks learn: 'cpu', 'cuda' or 'cuda:N'; 'auto' takes the first GPU torch sees, "
                        "else the CPU. Calibration and validation run on the CPU either way, as a scan on CPU nodes "
                        "would score (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _train_device(name: str) -> str:
    """--device -> a torch device string; ValueError with a message a user can act on."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a device name ('auto', 'cpu', 'cuda', 'cuda:N')") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: only 'cpu' and CUDA GPUs are supported")
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"--device {name!r}, but torch sees no CUDA GPU here (torch {torch.__version__}"
                             f"{'' if torch.version.cuda else ', a CPU-only build'}); use --device cpu")
        if (dev.index or 0) >= count:
            raise ValueError(f"--device {name!r}, but torch sees {count} GPU(s)")
    return str(dev)


def cmd_train(a) -> int:
    import json

    from zoomin_core.calibrate import calibrate, validate
    from zoomin_core.train import load_labelled, train
    if not (a.labels or a.real or a.generated):
        print("zoomin train: error: give LABELS and/or --real/--generated folders", file=sys.stderr)
        return 2
    try:
        device = _train_device(a.device)
    except ValueError as e:
        print(f"zoomin train: error: {e}", file=sys.stderr)
        return 2
    samples = load_labelled(a.labels, a.real, a.generated, exclude_sources=tuple(a.exclude_source),
                            decode=DecodeConfig(view_max_side=a.view_size))
    meta = {"version": a.version, "trained_on": a.labels or f"{a.real} + {a.generated}",
            "excluded_sources": a.exclude_source, "view_size": a.view_size}
    model = train(samples, TrainConfig(scan_steps=a.scan_steps, zoom_steps=a.zoom_steps, seed=a.seed,
                                       pseudo=a.pseudo, augment=a.augment,
                                       surprise_steps=a.surprise_steps, residual=a.residual), meta,
                  device=device)
    calibrate(model, samples)
    model.meta["validation"] = validate(model, samples)
    model.save(a.out)
    print(json.dumps({"weights": a.out, "scan_calibration": model.meta["scan_calibration"],
                      "fusion": model.meta["fusion"], "validation": model.meta["validation"]}, indent=2))
    return 0


def _add_train_consistency(sub) -> None:
    p = sub.add_parser("train-consistency", help="train the self-consistency check on real photos only",
                       description="Train the self-consistency check (`zoomin scan --consistency`) on real photos "
                                   "alone: each gets 1-3 regions altered by a simple operation (resample, blur, "
                                   "noise, median filter, an earlier JPEG) and a final JPEG save, and a small net "
                                   "learns to tell whether two patches of one image went through the same process. "
                                   "No generated image is needed or used.")
    p.add_argument("labels", nargs="?", default=None,
                   help="labels.jsonl written by `zoomin synth`: its real images of the 'train' split are used")
    p.add_argument("--real", action="append", default=[],
                   help="folder of real photos (recursive; repeatable); at least 128 px a side, full resolution")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    p.add_argument("--version", default="consistency-custom", help="version string recorded in the weights")
    p.add_argument("--steps", type=int, default=5000,
                   help="training steps of 48 patch pairs (default 5000: about 27 minutes on 2 CPU cores)")
    p.add_argument("--images", type=int, default=400,
                   help="altered copies of the photos to train on, held in memory (default 400: about 3 GB "
                        "for 1500 px photos)")
    p.add_argument("--jpeg-quality", type=int, default=92,
                   help="quality of the final JPEG save every altered copy gets; match your archive's (default 92, "
                        "as `zoomin synth`)")
    p.add_argument("--device", default="auto",
                   help="where the net learns: 'cpu', 'cuda', 'cuda:N' or 'auto' (the first GPU, else the CPU)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _real_photos(a) -> list:
    from pathlib import Path

    from zoomin_core.decode import DecodeError, decode_full

    from .evaluate import read_labels
    files = [Path(r["uri"]) for r in (read_labels(a.labels) if a.labels else [])
             if r["label"] == "real" and r.get("split", "train") == "train"]
    for folder in a.real:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--real {folder}: not a folder")
        files += sorted(f for f in Path(folder).rglob("*") if f.is_file() and not f.name.startswith("."))
    photos, skipped = [], 0
    for f in files:
        try:
            photos.append(decode_full(f.read_bytes()))
        except DecodeError:
            skipped += 1   # not an image, or a broken one: training goes on without it
    if skipped:
        print(f"zoomin train-consistency: skipped {skipped} file(s) that are not readable images", file=sys.stderr)
    return photos


def cmd_train_consistency(a) -> int:
    import json
    import time

    from zoomin_core.consistency_train import train_consistency

    from .evaluate import EvaluateError
    if not (a.labels or a.real):
        print("zoomin train-consistency: error: give LABELS and/or --real folders", file=sys.stderr)
        return 2
    try:
        device = _train_device(a.device)
    except ValueError as e:
        print(f"zoomin train-consistency: error: {e}", file=sys.stderr)
        return 2
    try:
        photos = _real_photos(a)
    except EvaluateError as e:  # a labels file that does not parse
        print(f"zoomin train-consistency: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()

    def progress(step, steps, loss, acc):
        print(f"step {step}/{steps}  loss {loss:.3f}  pair accuracy {acc:.3f}  ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    try:
        model = train_consistency(photos, steps=a.steps, images=a.images, seed=a.seed, device=device,
                                  jpeg_quality=a.jpeg_quality, version=a.version, progress=progress)
    except ValueError as e:
        print(f"zoomin train-consistency: error: {e}", file=sys.stderr)
        return 2
    model.meta["trained_on"] = a.labels or ", ".join(a.real)
    model.save(a.out)
    print(json.dumps({"weights": a.out, **model.meta}, indent=2))
    return 0
