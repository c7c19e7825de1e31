"""The `zoomin` command.

  zoomin scan [SRC] --out DST            scan images (default SRC: the bundled samples)
  zoomin scan s3://bucket/prefix/ --out s3://bucket/results/   read and write object storage
  zoomin report RESULTS --out page.html  a page with thumbnails, boxes, verdicts, rationales
  zoomin synth --out DIR                 make a labelled set offline (real + generated images)
  zoomin train DIR/labels.jsonl --out W  train the compact detector's weights
  zoomin train-consistency --real DIR --out W   train the self-consistency check (real photos only)
  zoomin evaluate RESULTS --labels L     metrics of a labelled scan
  zoomin submit --address URL -- scan .. the same on a running Ray cluster, through its Jobs API

Local:    zoomin scan ./photos --out ./results
Cluster:  zoomin scan /mnt/archive --out /mnt/results --address auto
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from zoomin_core.backends import available
from zoomin_core.decode import DecodeConfig
from zoomin_core.generators import DEFAULT_FAMILIES, FAMILIES
from zoomin_core.synth import SynthConfig
from zoomin_core.stages import STAGE_CHOICES, ExamineConfig

from .cli_train import _add_train, _add_train_consistency, cmd_train, cmd_train_consistency


def _add_storage(p) -> None:
    g = p.add_argument_group("object storage", "Credentials come from the standard chain (AWS_* variables, "
                             "~/.aws config files, instance roles); these override it.")
    g.add_argument("--storage-config", default=None, metavar="FILE",
                   help="JSON file with any of: endpoint_url, region, profile, anon, key, secret, token, "
                        "retries, backoff_s (flags below win over it)")
    g.add_argument("--endpoint-url", default=None,
                   help="S3-compatible endpoint (MinIO, Ceph, a private endpoint), e.g. http://minio:9000")
    g.add_argument("--region", default=None, help="S3 region (default: from the AWS chain)")
    g.add_argument("--profile", default=None, help="profile of ~/.aws/config to use")
    g.add_argument("--anon", action="store_true", default=None, help="unsigned requests (public buckets)")
    g.add_argument("--retries", type=int, default=None,
                   help="attempts per request and per object on throttling, 5xx and dropped connections (default 8)")


def _storage(a):
    from .storage import StorageConfig
    over = dict(endpoint_url=a.endpoint_url, region=a.region, profile=a.profile, anon=a.anon, retries=a.retries)
    if a.storage_config:
        return StorageConfig.from_file(a.storage_config, **over)
    return StorageConfig(**{k: v for k, v in over.items() if v is not None})


def _add_scan(sub) -> None:
    p = sub.add_parser("scan", help="scan images for AI generation: boxes, verdicts, rationales",
                       description="Scan every file under SRC (recursively; hidden files skipped) and write one "
                                   "Parquet row per image to --out. SRC and --out may be local or any fsspec URL "
                                   "(s3://, gs:// with gcsfs installed).")
    p.add_argument("src", nargs="?", default=None,
                   help="folder or prefix (recursive), glob pattern (quote it) or one object; "
                        "default: the bundled samples")
    p.add_argument("--out", required=True,
                   help="output folder or prefix for the Parquet results (must be new or empty)")
    p.add_argument("--manifest", default=None, metavar="FILE",
                   help="scan the objects listed in FILE instead of SRC: text (one URI per line), CSV/TSV or "
                        "Parquet with a 'uri' column; other columns are carried into the output's 'extra'")
    p.add_argument("--input-format", default="auto", choices=("auto", "files", "tar", "parquet"),
                   help="auto (default): .tar/.tar.gz/.tgz are WebDataset-style shards, .parquet are Parquet "
                        "shards, everything else one image per object; or force one reading for all")
    p.add_argument("--image-column", default="image",
                   help="column of Parquet shards that holds the image bytes (default 'image'; a "
                        "{'bytes': ...} struct as written by Hugging Face datasets also works)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    p.add_argument("--incremental", action="store_true",
                   help="--out holds a complete run of this job: scan only the images not in it yet (new keys), "
                        "append their rows, leave the earlier rows untouched")
    p.add_argument("--rescan", action="store_true",
                   help="--out holds a run of this job: clear its results and scan everything again "
                        "(e.g. after a model change)")
    p.add_argument("--allow-root", action="append", default=[], metavar="PREFIX",
                   help="a manifest may only point under these prefixes (repeatable; '*' for any). Default: any "
                        "object-store URI, and local files under the manifest's own folder")
    p.add_argument("--backend", default="compact", choices=available(),
                   help="model backend (default: compact, the bundled CPU detector; vlm: a vision-language "
                        "checkpoint given by --model; fake: deterministic test double)")
    p.add_argument("--model", default=None,
                   help="weights / checkpoint: local path or s3://... (fetched once per node into "
                        "$ZOOMIN_CACHE, default ~/.cache/zoomin); default: the backend's bundled weights")
    c = p.add_argument_group("compact backend")
    c.add_argument("--prior", type=float, default=None, metavar="SHARE",
                   help="the share of generated images you expect in this archive, e.g. 0.02: scores and "
                        "verdicts become P(generated) at that share instead of the one the weights were "
                        "calibrated on (about 0.6 for the default weights), so far fewer real photos are "
                        "flagged; ranking is unchanged (default: the weights' own share)")
    g = p.add_argument_group("vlm backend")
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="prompt templates (JSON with version, scan, zoom; default: the shipped zoomin-prompts-v1)")
    g.add_argument("--keep-raw", action="store_true", help="keep the model's own text in the 'raw' column, for audit")
    g.add_argument("--max-new-tokens", type=int, default=256, help="cap on tokens generated per query (default 256)")
    g.add_argument("--max-image-pixels", type=int, default=None,
                   help="pixel budget of the whole image per query (default: the checkpoint's processor setting)")
    g.add_argument("--crop-pixels", type=int, default=448 * 448,
                   help="each crop is resized to about this many pixels, so small regions are magnified "
                        "(default 200704 = 448x448)")
    p.add_argument("--stages", default="scan,zoom", choices=STAGE_CHOICES, metavar="{scan,zoom|scan}",
                   help="'scan,zoom' (the method: look, then zoom into regions) or 'scan' (first look only)")
    p.add_argument("--max-boxes", type=int, default=4, help="most regions zoomed into per image (default 4)")
    p.add_argument("--consistency", nargs="?", const="default", default=None, metavar="WEIGHTS",
                   help="also run the self-consistency check, trained on real photos only, on each image at full "
                        "resolution: its score (how much one region differs from the rest) goes to the "
                        "'consistency' column and its strongest region is zoomed into too. Alone: the bundled "
                        "weights; or a weights file from `zoomin train-consistency` (local or s3://). It costs "
                        "about 0.5 s per megapixel on 2 CPU cores, several times the detector's own time "
                        "(default: off)")
    p.add_argument("--margin", type=float, default=0.15,
                   help="context added around each region before cropping, as a fraction of its size (default 0.15)")
    p.add_argument("--min-crop-side", type=int, default=64,
                   help="smallest crop side in original pixels (default 64)")
    p.add_argument("--view-size", type=int, default=DecodeConfig.view_max_side,
                   help="longest side of the reduced image the scan looks at; keep the size the weights learned on "
                        f"(`zoomin train --view-size`; default {DecodeConfig.view_max_side}, as the bundled weights)")
    p.add_argument("--max-pixels", type=int, default=DecodeConfig.max_pixels,
                   help=f"refuse images larger than this many pixels as too_large (default {DecodeConfig.max_pixels:,})")
    p.add_argument("--max-bytes", type=int, default=512 * 1024 * 1024,
                   help="refuse files larger than this many bytes as too_large (default 512 MiB)")
    p.add_argument("--address", default=None,
                   help="join an existing Ray cluster ('auto', 'ray://host:10001'); default: start a local one")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--actors", type=int, default=None,
                   help="model actors (copies of the model); default: sized from the cluster's CPUs/GPUs")
    p.add_argument("--actor-cpus", type=float, default=None,
                   help="CPUs per model actor, also its torch thread count (default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0,
                   help="GPUs per model actor; fractions share a GPU (default 0: CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="images per model call (default 8 on CPU, 16 on GPU)")
    p.add_argument("--split-stages", default="auto", choices=("auto", "on", "off"),
                   help="separate scan and zoom actor pools with CPU crop tasks between them, so GPU actors "
                        "only run the model (auto, the default: on when --gpus-per-actor > 0)")
    p.add_argument("--rows-per-file", type=int, default=None,
                   help="rows per output Parquet file: files hold at most this many, and write tasks gather "
                        "this many before writing (default: one file per block)")
    p.add_argument("--stall-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="after a node of the cluster is lost, a scan that commits no results for this long is "
                        "stopped and what is still missing is run again (Ray can leave a dead node's task "
                        "unfinished); 0 turns this off (default 300)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="most such restarts before the scan gives up, keeping what was committed (default 3)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _add_storage(p)


def cmd_scan(a) -> int:
    from zoomin_core.backends.vlm_families import CheckpointError

    from .models import ModelError
    from .pipeline import JobConfig
    from .plan import PlanError
    from .scan import RayConfig, ScanStalled, run_scan
    from .sinks import OutputError
    from .sources import SAMPLES_DIR, SourceConfig, SourceError
    from .storage import StorageError

    if a.src and a.manifest:
        print("zoomin scan: error: give SRC or --manifest, not both", file=sys.stderr)
        return 2
    if a.rows_per_file is not None and a.rows_per_file < 1:
        print("zoomin scan: error: --rows-per-file must be at least 1", file=sys.stderr)
        return 2
    if a.prior is not None and not 0 < a.prior < 1:
        print("zoomin scan: error: --prior is a share of images: give a number between 0 and 1, e.g. 0.02",
              file=sys.stderr)
        return 2
    if a.prior is not None and a.backend != "compact":
        print(f"zoomin scan: error: --prior needs the compact backend's calibrated scores, not --backend {a.backend}",
              file=sys.stderr)
        return 2
    try:
        examine = ExamineConfig(stages=a.stages, margin=a.margin, min_crop_side=a.min_crop_side,
                                max_boxes=a.max_boxes, consistency=a.consistency,
                                decode=DecodeConfig(max_pixels=a.max_pixels, view_max_side=a.view_size))
        source = SourceConfig(input_format=a.input_format, image_column=a.image_column,
                              max_bytes=a.max_bytes, storage=_storage(a), allow_roots=tuple(a.allow_root))
        options = {}
        if a.backend == "compact":
            options = {"max_boxes": a.max_boxes}
            if a.prior is not None:
                options["prior"] = a.prior
        elif a.backend == "vlm":
            options = {"max_boxes": a.max_boxes, "prompts": a.prompts, "keep_raw": a.keep_raw,
                       "max_new_tokens": a.max_new_tokens, "max_pixels": a.max_image_pixels,
                       "crop_pixels": a.crop_pixels}
            if a.prompts:
                from zoomin_core.backends.vlm import load_prompts
                load_prompts(a.prompts)  # a bad file stops the job here, not in every actor
        cfg = JobConfig(backend=a.backend, model=a.model, examine=examine, source=source,
                        backend_options=options)
        rc = RayConfig(address=a.address, num_cpus=a.num_cpus, actors=a.actors, actor_cpus=a.actor_cpus,
                       gpus_per_actor=a.gpus_per_actor, batch_size=a.batch_size, progress=not a.no_progress,
                       split_stages={"auto": None, "on": True, "off": False}[a.split_stages],
                       stall_s=a.stall_timeout, max_restarts=a.max_restarts)
        if a.prior is not None and (a.model is None or Path(a.model).exists()):
            # Weights without the share their scores carry would fail in every actor: say so here.
            from zoomin_core.backends.compact import calibration_share
            from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel
            calibration_share(CompactModel.load(a.model or DEFAULT_WEIGHTS))
        src = None if a.manifest else (a.src or str(SAMPLES_DIR))
        summary = run_scan(src, a.out, cfg, rc, a.overwrite, a.rows_per_file, manifest=a.manifest,
                           incremental=a.incremental, rescan=a.rescan)
    except (SourceError, OutputError, PlanError, ModelError, StorageError, CheckpointError, ValueError) as e:
        print(f"zoomin scan: error: {e}", file=sys.stderr)
        return 2
    except ScanStalled as e:
        print(f"zoomin scan: error: {e}", file=sys.stderr)
        return 1
    except ConnectionError as e:  # --address given, no cluster answering there
        print(f"zoomin scan: error: cannot join the Ray cluster at {a.address!r}: {e}", file=sys.stderr)
        return 2
    print(summary.text())
    return 0 if summary.complete else 1


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML page of scan results")
    p.add_argument("results", help="folder written by `zoomin scan --out`")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--limit", type=int, default=500, help="most images shown, most suspicious first (default 500)")
    _add_storage(p)


def cmd_report(a) -> int:
    from .report import write_report
    n = write_report(a.results, a.out, limit=a.limit, storage=_storage(a))
    print(f"zoomin report: {n} image(s) -> {a.out}")
    return 0


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="make a labelled set of real and generated images, offline")
    p.add_argument("--out", required=True, help="folder for images/ and labels.jsonl")
    p.add_argument("--count", type=int, default=SynthConfig.count,
                   help=f"number of images (default {SynthConfig.count}: 40%% real, 20%% wholly and 40%% "
                        "regionally generated)")
    p.add_argument("--families", default=",".join(DEFAULT_FAMILIES),
                   help=f"generator families, comma-separated (default {','.join(DEFAULT_FAMILIES)}; known: "
                        f"{', '.join(FAMILIES)})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--real-dir", default=None,
                   help="folder of your own real photos (default: photos shipped in scikit-image/scikit-learn)")
    p.add_argument("--jpeg-quality", type=int, default=SynthConfig.jpeg_quality,
                   help=f"the final encoding of every image (default {SynthConfig.jpeg_quality})")
    p.add_argument("--generator-steps", type=int, default=SynthConfig.generator_steps,
                   help=f"training steps of each generator family (default {SynthConfig.generator_steps}, 7-30 s each)")
    p.add_argument("--processing", type=float, default=SynthConfig.processing,
                   help="share of photo crops given ordinary real-photo processing first (blur, sharpening, "
                        f"an earlier JPEG save, down-scaling), real and generated alike (default {SynthConfig.processing})")
    p.add_argument("--defocus", type=float, default=SynthConfig.defocus,
                   help="share of photo crops given a patch of simulated defocus (optical blur with sensor noise "
                        "on top), real and generated alike: smooth areas that are real "
                        f"(default {SynthConfig.defocus})")
    p.add_argument("--calib-share", type=float, default=SynthConfig.calib_share,
                   help="share of images made from photos kept out of all training and used only for the calib "
                        "and test splits, so that the score calibration knows photos the detector never saw "
                        f"(default {SynthConfig.calib_share}; packaged photos: {', '.join(SynthConfig.calib_photos)}; "
                        "your own folder: every seventh photo; 0: none)")


def cmd_synth(a) -> int:
    from zoomin_core.synth import folder_photos, synthesize
    families = tuple(f.strip() for f in a.families.split(",") if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        print(f"zoomin synth: error: unknown families {unknown}; known: {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    try:
        cfg = SynthConfig(count=a.count, seed=a.seed, jpeg_quality=a.jpeg_quality,
                          generator_steps=a.generator_steps, families=families,
                          processing=a.processing, defocus=a.defocus, calib_share=a.calib_share)
    except ValueError as e:
        print(f"zoomin synth: error: {e}", file=sys.stderr)
        return 2
    photos = folder_photos(a.real_dir) if a.real_dir else None
    path = synthesize(a.out, cfg, photos)
    print(f"zoomin synth: {a.count} images, labels in {path}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a scan's results against labels",
                       description="Join RESULTS (a `zoomin scan --out` folder) with LABELS by image path and "
                                   "print accuracy, precision/recall/F1, ROC-AUC, calibration (ECE, and the ECE a perfectly "
                                   "calibrated model would show on that many images), box IoU, "
                                   "region recall at IoU 0.5 and flip rate, overall and per kind, source and split.")
    p.add_argument("results", help="folder written by `zoomin scan --out`")
    p.add_argument("--labels", required=True,
                   help="labels: JSONL, or CSV/TSV (by extension), with 'file' (relative to the labels file) or 'uri', "
                        "'label' (real/generated; 0/1 and fake/ai also read), optional 'kind', 'source', 'split', 'boxes' ([[x1,y1,x2,y2], ...])")
    p.add_argument("--split", default=None, help="evaluate only labels of this split (e.g. test)")
    p.add_argument("--json", default=None, help="also write the full report to this JSON file")
    _add_storage(p)


def cmd_evaluate(a) -> int:
    from .evaluate import EvaluateError, run_evaluate
    try:
        text = run_evaluate(a.results, a.labels, split=a.split, json_out=a.json, storage=_storage(a))
    except EvaluateError as e:
        print(f"zoomin evaluate: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _add_submit(sub) -> None:
    p = sub.add_parser("submit", help="run a zoomin command as a job on a running Ray cluster (Ray Jobs API)",
                       description="Submit `zoomin COMMAND ...` (given after '--') to a Ray cluster through its "
                                   "Jobs API. The job carries this version of zoomin; paths are read on the cluster.")
    p.add_argument("--address", required=True, help="the cluster's dashboard / Jobs API, e.g. http://head:8265")
    p.add_argument("--follow", action="store_true", help="stream the job's logs until it ends; exit with its status")
    p.add_argument("--wait", action="store_true", help="wait until the job ends (no logs); exit with its status")
    p.add_argument("--submission-id", default=None, help="the job's id (default: chosen by Ray)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the job (repeatable)")
    p.add_argument("job", nargs=argparse.REMAINDER, help="-- followed by the zoomin command, e.g. -- scan SRC --out DST")


def cmd_submit(a) -> int:
    from .submit import SubmitError, submit
    command = a.job[1:] if a.job[:1] == ["--"] else a.job
    try:
        env = dict(kv.split("=", 1) for kv in a.env)
    except ValueError:
        print("zoomin submit: error: --env takes KEY=VALUE", file=sys.stderr)
        return 2
    try:
        return submit(a.address, command, follow=a.follow, wait=a.wait, submission_id=a.submission_id, env_vars=env)
    except SubmitError as e:
        print(f"zoomin submit: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoomin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_scan, _add_report, _add_synth, _add_train, _add_train_consistency, _add_evaluate,
                _add_submit):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    # synth and train are long and quiet otherwise: show their progress by default.
    logging.basicConfig(level=logging.INFO if a.verbose or a.command in ("synth", "train", "train-consistency") else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    command = {"scan": cmd_scan, "report": cmd_report, "synth": cmd_synth, "train": cmd_train,
               "train-consistency": cmd_train_consistency, "evaluate": cmd_evaluate, "submit": cmd_submit}[a.command]
    from .sinks import OutputError
    from .storage import explain, is_client_error
    try:
        return command(a)
    except KeyboardInterrupt:  # Ctrl-C: a scan's committed files stay, and say so
        resume = " - the results committed so far are kept; the same command resumes" if a.command == "scan" else ""
        print(f"\nzoomin {a.command}: interrupted{resume}", file=sys.stderr)
        return 130
    # What a user's paths, permissions and credentials cause is said in one line (exit 2); any
    # other exception is a bug and keeps its traceback.
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, OutputError) as e:
        print(f"zoomin {a.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not is_client_error(e):
            raise
        print(f"zoomin {a.command}: error: {explain(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
