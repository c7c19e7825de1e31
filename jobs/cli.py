"""The `zoomin` command: what each command runs. Its flags live in `args.py`.

Local:    zoomin scan ./photos --out ./results
Cluster:  zoomin scan /mnt/archive --out /mnt/results --address auto
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

from zoomin_core.backends import BACKENDS

from .args import parse


def _storage(a):
    from .storage import StorageConfig
    over = dict(endpoint_url=a.endpoint_url, region=a.region, profile=a.profile, anon=a.anon, retries=a.retries)
    if a.storage_config:
        return StorageConfig.from_file(a.storage_config, **over)
    return StorageConfig(**{k: v for k, v in over.items() if v is not None})


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"zoomin {command}: error: {message}", file=sys.stderr)
    return code


def _trust(path):
    """--c2pa-trust FILE -> its PEM text (read once here; the decode tasks get the text)."""
    if path is None:
        return None
    text = Path(path).read_text()   # a missing file: one line, exit 2 (main)
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"--c2pa-trust {path}: not a PEM file of certificates")
    return text


def _tier_names(a) -> tuple[str, Optional[str]]:
    """(first backend, second backend or None): --backend, or the two of --cascade."""
    if a.cascade:
        if a.backend and a.backend != a.cascade[0]:
            raise ValueError(f"--backend {a.backend} and --cascade {','.join(a.cascade)} disagree: with --cascade "
                             "the first name is the first tier; leave --backend out")
        return a.cascade
    return a.backend or "compact", None


def _models(a, names: tuple) -> dict:
    """--model values by backend: NAME=PATH for a named tier, a plain PATH for a single backend."""
    out: dict = {}
    for value in a.model or []:
        name, sep, path = value.partition("=")
        if sep and name in BACKENDS:
            if name not in names:
                raise ValueError(f"--model {value}: {name} is not a backend of this scan ({', '.join(names)})")
        elif len(names) > 1:
            raise ValueError(f"--model {value}: with --cascade say which tier it is for, e.g. "
                             f"--model {names[1]}={value}")
        else:
            name, path = names[0], value
        if not path:
            raise ValueError(f"--model {value}: no path after '='")
        if name in out:
            raise ValueError(f"--model given twice for {name}: {out[name]} and {path}")
        out[name] = path
    return out


def _options(name: str, a, threshold: Optional[float] = None) -> dict:
    """A backend's options from the flags. threshold: --threshold, for the tier it applies to."""
    options = {} if threshold is None else {"threshold": threshold}
    if name == "compact":
        options["max_boxes"] = a.max_boxes
        if a.prior is not None:
            options["prior"] = a.prior
    elif name == "classifier":
        options["max_boxes"] = a.max_boxes
        options.update({k: v for k, v in (("generated_labels", a.generated_labels), ("max_tiles", a.max_tiles),
                                          ("tile_overlap", a.tile_overlap), ("zoom_tiles", a.zoom_tiles))
                        if v is not None})
    elif name == "vlm":
        options.update({"max_boxes": a.max_boxes, "prompts": a.prompts, "keep_raw": a.keep_raw,
                        "max_new_tokens": a.max_new_tokens, "max_pixels": a.max_image_pixels,
                        "crop_pixels": a.crop_pixels})
    return options


def _view_size(a, first: str, found: dict) -> int:
    """--view-size, or the first tier's default: a classifier's covers --max-tiles tiles of its input."""
    from zoomin_core.decode import DecodeConfig
    if a.view_size is not None:
        return a.view_size
    if first == "classifier":
        from zoomin_core.backends.classifier import MAX_TILES, TILE_OVERLAP, scan_side
        return scan_side(found["classifier"]["input_side"], a.max_tiles or MAX_TILES,
                         TILE_OVERLAP if a.tile_overlap is None else a.tile_overlap)
    return DecodeConfig.view_max_side


def _band(a, first: str, weights: Optional[str]):
    """--escalate, or the band the compact weights carry (for their scores at their own prior)."""
    from zoomin_core.cascade import Band
    if a.escalate:
        return Band(*a.escalate)
    if first == "compact" and a.prior is None and (weights is None or Path(weights).exists()):
        from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel
        meta = CompactModel.load(weights or DEFAULT_WEIGHTS).meta
        if meta.get("escalate_band"):
            return Band(*meta["escalate_band"])
    raise ValueError("--cascade needs --escalate LOW:HIGH here (only compact weights at their own prior carry a "
                     "default band); `zoomin evaluate --target-fpr F` prints one for your labelled images")


def cmd_scan(a) -> int:
    from zoomin_core.backends.vlm_families import CheckpointError
    from zoomin_core.decode import DecodeConfig
    from zoomin_core.stages import ExamineConfig

    from .models import ModelError, check_model
    from .pipeline import JobConfig, SecondTier
    from .plan import PlanError
    from .scan import RayConfig, ScanStalled, run_scan
    from .sinks import OutputError
    from .sources import SAMPLES_DIR, SourceConfig, SourceError
    from .storage import StorageError

    if a.src and a.manifest:
        return _fail("scan", "give SRC or --manifest, not both")
    if not a.out and not a.estimate:
        return _fail("scan", "give --out DST, the folder or prefix for the results (or --estimate to time the "
                             "job on a sample of SRC without writing anything)")
    if (a.deadline or a.estimate_sample) and not a.estimate:
        return _fail("scan", "--deadline and --estimate-sample go with --estimate")
    if a.estimate and (a.overwrite or a.incremental or a.rescan):
        return _fail("scan", "--estimate writes nothing: leave out --overwrite, --incremental and --rescan")
    if sum((a.overwrite, a.incremental, a.rescan)) > 1:
        return _fail("scan", "--overwrite, --incremental and --rescan exclude each other: give one")
    try:
        first, second = _tier_names(a)
        names = (first, second) if second else (first,)
        models = _models(a, names)
    except ValueError as e:
        return _fail("scan", str(e))
    if a.prior is not None and "compact" not in names:
        return _fail("scan", f"--prior needs the compact backend's calibrated scores, not --backend {first}")
    vlm_flags = [f for f, v in (("--prompts", a.prompts), ("--keep-raw", a.keep_raw),
                                ("--max-image-pixels", a.max_image_pixels)) if v]
    if vlm_flags and "vlm" not in names:
        return _fail("scan", f"{', '.join(vlm_flags)} appl{'y' if len(vlm_flags) > 1 else 'ies'} to --backend vlm only")
    classifier_flags = [f for f, v in (("--generated-labels", a.generated_labels), ("--max-tiles", a.max_tiles),
                                       ("--tile-overlap", a.tile_overlap), ("--zoom-tiles", a.zoom_tiles)) if v]
    if classifier_flags and "classifier" not in names:
        return _fail("scan", f"{', '.join(classifier_flags)} appl{'y' if len(classifier_flags) > 1 else 'ies'} to "
                             "--backend classifier only")
    if a.escalate and not second:
        return _fail("scan", "--escalate sets the band of a cascade: give --cascade FIRST,SECOND too")
    if a.address and a.num_cpus is not None:
        return _fail("scan", "--num-cpus sizes the local cluster zoomin starts; with --address the cluster has its own")
    try:
        source = SourceConfig(input_format=a.input_format, image_column=a.image_column,
                              max_bytes=a.max_bytes, storage=_storage(a), allow_roots=tuple(a.allow_root))
        # an unusable model is refused here, before Ray starts
        found = {name: check_model(models.get(name), source.storage, name, a.generated_labels or ())
                 for name in names}
        examine = ExamineConfig(stages=a.stages, margin=a.margin, min_crop_side=a.min_crop_side,
                                max_boxes=a.max_boxes, examine_all=a.examine_all,
                                decode=DecodeConfig(max_pixels=a.max_pixels, view_max_side=_view_size(a, first, found),
                                                    view_min_side=found[first].get("input_side", 0),
                                                    c2pa_trust=_trust(a.c2pa_trust)))
        options = _options(first, a, None if second else a.threshold)
        tier2 = None
        if second:
            band = _band(a, first, models.get(first))
            options["threshold"] = band.high   # outside the band the first tier's verdict follows it
            tier2 = SecondTier(second, band, models.get(second), _options(second, a, a.threshold))
        if a.prompts:
            from zoomin_core.backends.vlm import load_prompts
            load_prompts(a.prompts)  # a bad file stops the job here, not in every actor
        cfg = JobConfig(backend=first, model=models.get(first), examine=examine, source=source,
                        backend_options=options, second=tier2)
        rc = RayConfig(address=a.address, num_cpus=a.num_cpus, actors=a.actors, actor_cpus=a.actor_cpus,
                       gpus_per_actor=a.gpus_per_actor, batch_size=a.batch_size, progress=not a.no_progress,
                       progress_every=a.progress_every, verbose=a.verbose,
                       split_stages={"auto": None, "on": True, "off": False}[a.split_stages], decode=a.decode,
                       stall_s=a.stall_timeout, max_restarts=a.max_restarts)
        weights = models.get("compact")
        if a.prior is not None and (weights is None or Path(weights).exists()):
            # Weights without the share their scores carry would fail in every actor: say so here.
            from zoomin_core.backends.compact import calibration_share
            from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel
            calibration_share(CompactModel.load(weights or DEFAULT_WEIGHTS))
        src = None if a.manifest else (a.src or str(SAMPLES_DIR))
        if a.estimate:
            from .estimate import run_estimate
            est = run_estimate(src, cfg, rc, a.manifest, a.estimate_sample, a.deadline, a.out)
            print(est.text())
            return 0 if est.meets_deadline else 1   # scripts can tell a deadline this cluster misses
        summary = run_scan(src, a.out, cfg, rc, a.overwrite, a.rows_per_file, manifest=a.manifest,
                           incremental=a.incremental, rescan=a.rescan)
    except (SourceError, OutputError, PlanError, ModelError, StorageError, CheckpointError, ValueError) as e:
        return _fail("scan", str(e))
    except ScanStalled as e:
        return _fail("scan", str(e), 1)
    except ConnectionError as e:  # --address given, no cluster answering there
        return _fail("scan", f"cannot join the Ray cluster at {a.address!r}: {e}")
    print(summary.text())
    return 0 if summary.complete else 1


def cmd_report(a) -> int:
    from .report import write_report
    n = write_report(a.results, a.out, limit=a.limit, storage=_storage(a))
    print(f"zoomin report: {n} image(s) -> {a.out}")
    return 0


def cmd_synth(a) -> int:
    from zoomin_core.generators import FAMILIES
    from zoomin_core.synth import SynthConfig, folder_photos, synthesize
    families = tuple(f.strip() for f in a.families.split(",") if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        return _fail("synth", f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    if not a.real_dir:
        try:
            import skimage  # noqa: F401 - only whether it is there
            import sklearn  # noqa: F401 - only whether it is there
        except ImportError as e:
            return _fail("synth", f"the packaged photos need the 'synth' extra ({e.name} is not installed): "
                                  "bash scripts/setup.sh ray,synth (or pip install '.[synth]'), or give your own "
                                  "photos with --real-dir")
    elif not Path(a.real_dir).is_dir():
        return _fail("synth", f"--real-dir {a.real_dir}: not a folder")
    try:
        cfg = SynthConfig(count=a.count, seed=a.seed, jpeg_quality=a.jpeg_quality,
                          generator_steps=a.generator_steps, families=families,
                          defocus=a.defocus, calib_share=a.calib_share)
    except ValueError as e:
        return _fail("synth", str(e))
    photos = folder_photos(a.real_dir) if a.real_dir else None
    path = synthesize(a.out, cfg, photos)
    print(f"zoomin synth: {a.count} images, labels in {path}")
    return 0


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
    from zoomin_core.decode import DecodeConfig
    from zoomin_core.train import TrainConfig, load_labelled, train
    if not (a.labels or a.real or a.generated):
        return _fail("train", "give LABELS and/or --real/--generated folders")
    try:
        device = _train_device(a.device)
    except ValueError as e:
        return _fail("train", str(e))
    for flag, path, kind in (("LABELS", a.labels, "file"), ("--real", a.real, "folder"),
                             ("--generated", a.generated, "folder")):
        if path and not (Path(path).is_file() if kind == "file" else Path(path).is_dir()):
            return _fail("train", f"{flag} {path}: not a {kind}")   # as synth words its --real-dir
    samples = load_labelled(a.labels, a.real, a.generated, exclude_sources=tuple(a.exclude_source),
                            decode=DecodeConfig(view_max_side=a.view_size))
    meta = {"version": a.version, "trained_on": a.labels or f"{a.real} + {a.generated}",
            "excluded_sources": a.exclude_source, "view_size": a.view_size}
    model = train(samples, TrainConfig(scan_steps=a.scan_steps, zoom_steps=a.zoom_steps, seed=a.seed), meta,
                  device=device)
    calibrate(model, samples)
    model.meta["validation"] = validate(model, samples)
    model.save(a.out)
    print(json.dumps({"weights": a.out, "scan_calibration": model.meta["scan_calibration"],
                      "zoom_calibration": model.meta["zoom_calibration"], "zoom_weight": model.meta["zoom_weight"],
                      "validation": model.meta["validation"]}, indent=2))
    return 0


def cmd_evaluate(a) -> int:
    from .evaluate import EvaluateError, run_evaluate
    try:
        text = run_evaluate(a.results, a.labels, split=a.split, json_out=a.json, storage=_storage(a),
                            target_fpr=a.target_fpr, target_recall=a.target_recall)
    except EvaluateError as e:
        return _fail("evaluate", str(e))
    print(text)
    return 0


def cmd_relabel(a) -> int:
    from .relabel import relabel
    try:
        summary = relabel(a.results, a.labels, a.out, _storage(a))
    except ValueError as e:
        return _fail("relabel", str(e))
    print(f"zoomin relabel: {summary['disagreements']} of {summary['judged']} labelled image(s) with a verdict "
          f"({summary['scanned']} scanned) contradict their "
          f"label ({summary['labelled_real_called_generated']} labelled real called generated, "
          f"{summary['labelled_generated_called_real']} labelled generated called real) -> {a.out}/review.html")
    return 0


def cmd_annotate(a) -> int:
    import json

    from .annotate import AnnotateError, annotate
    from .models import ModelError
    try:
        summary = annotate(a.labels, a.out, _storage(a), chunk=a.chunk, teacher=a.teacher, address=a.address,
                           min_iou=a.min_iou, teacher_actors=a.teacher_actors, gpus_per_actor=a.gpus_per_actor,
                           max_new_tokens=a.max_new_tokens, review=a.review)
    except (AnnotateError, ModelError) as e:
        return _fail("annotate", str(e))
    dropped = sum(summary["dropped"].values())
    failed = ", ".join(f"{k} {v}" for k, v in summary["failed"].items())
    print(f"zoomin annotate: {summary['examples']} example(s) of {summary['labels']} label(s)"
          + (f", {dropped} dropped by the filters" if dropped else "")
          + (f", failed: {failed}" if failed else "") + f" -> {a.out}"
          + (f"; a sample to look through: {summary['review']}" if summary.get("review") else ""))
    print(json.dumps(summary, indent=1))
    return 0 if summary["examples"] else 1


def cmd_finetune(a) -> int:
    import json

    from .finetune import FinetuneConfig, FinetuneError, finetune
    from .models import ModelError
    cfg = FinetuneConfig(dataset=a.dataset, base=a.base, out=a.out, full=a.full, lora_rank=a.lora_rank,
                         epochs=a.epochs, steps=a.steps, lr=a.lr, warmup=a.warmup, batch_size=a.batch_size, workers=a.workers,
                         gpus_per_worker=a.gpus_per_worker, checkpoint_every=a.checkpoint_every,
                         checkpoints=a.checkpoints, seed=a.seed, storage=_storage(a))
    try:
        record = finetune(cfg, prompts=a.prompts, address=a.address)
    except (FinetuneError, ModelError) as e:
        return _fail("finetune", str(e))
    print(f"zoomin finetune: {a.out} ({record['mode']}, {record['steps']} steps, last loss {record['loss']:.4f}); "
          f"scan with: zoomin scan SRC --out DST --backend vlm --model {a.out}")
    print(json.dumps(record, indent=1))
    return 0


def cmd_submit(a) -> int:
    from .submit import SubmitError, submit
    command = a.job[1:] if a.job[:1] == ["--"] else a.job
    try:
        env = dict(kv.split("=", 1) for kv in a.env)
    except ValueError:
        return _fail("submit", "--env takes KEY=VALUE")
    try:
        return submit(a.address, command, follow=a.follow, wait=a.wait, submission_id=a.submission_id, env_vars=env)
    except SubmitError as e:
        return _fail("submit", str(e))


def _logging(verbose: bool, command: str) -> None:
    # synth and train are long and quiet otherwise: show their progress by default.
    level = logging.INFO if verbose or command in ("synth", "train") else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not verbose:
        # Ray's and Ray Data's own INFO lines (dataset plans, "Total Progress: 0/?") are for
        # debugging Ray; zoomin prints its own progress. --verbose shows them.
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    try:
        a = parse(argv)
    except SystemExit as e:  # a refused command line (one line printed, 2) or --help (0)
        return int(e.code or 0)
    _logging(a.verbose, a.command)
    from .sinks import OutputError
    from .storage import explain, is_client_error
    command = {"scan": cmd_scan, "report": cmd_report, "synth": cmd_synth, "train": cmd_train,
               "evaluate": cmd_evaluate, "annotate": cmd_annotate, "finetune": cmd_finetune,
               "relabel": cmd_relabel,
               "submit": cmd_submit}[a.command]
    try:
        return command(a)
    except KeyboardInterrupt:  # Ctrl-C: a scan's committed files stay, and say so
        resume = " - the results committed so far are kept; the same command resumes" if a.command == "scan" else ""
        print(f"\nzoomin {a.command}: interrupted{resume}", file=sys.stderr)
        return 130
    # What a user's paths, permissions and credentials cause is said in one line (exit 2); any
    # other exception is a bug and keeps its traceback.
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, OutputError) as e:
        return _fail(a.command, str(e))
    except Exception as e:
        if not is_client_error(e):
            raise
        return _fail(a.command, explain(e))


if __name__ == "__main__":
    sys.exit(main())
