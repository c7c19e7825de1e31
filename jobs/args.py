"""The `zoomin` command line: every command's flags, and the checks that refuse a mistake in one
line (exit 2) before anything starts. `cli.py` runs the commands; `submit.py` validates the
command it sends to a cluster with the same parser.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys

from zoomin_core.backends import BACKENDS, available
from zoomin_core.decode import DecodeConfig
from zoomin_core.stages import STAGE_CHOICES

DOC = """Find AI-generated images in large archives, and say where and why.

  zoomin scan [SRC] --out DST            scan images (default SRC: the bundled samples)
  zoomin scan s3://bucket/prefix/ --out s3://bucket/results/   read and write object storage
  zoomin report RESULTS --out page.html  a page to review the results in a browser
  zoomin evaluate RESULTS --labels L     metrics of a labelled scan
  zoomin synth --out DIR                 make a labelled set offline (real + generated images)
  zoomin train DIR/labels.jsonl --out W  train the compact detector's weights
  zoomin relabel RESULTS --labels L --out REVIEW   where a scan contradicts your labels
  zoomin annotate L --out DATASET        labelled images -> answers to the two queries
  zoomin finetune DATASET --base CKPT --out DIR    fine-tune a vision-language model on them
  zoomin submit --address URL -- scan .. the same on a running Ray cluster, through its Jobs API

Local:    zoomin scan ./photos --out ./results
Cluster:  zoomin scan /mnt/archive --out /mnt/results --address auto
"""


# -- value checks: a bad number is refused by the parser, before Ray starts -------------------

def _number(kind, low=None, high=None, low_open=False, what="", high_open=False):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if low is not None and (v <= low if low_open else v < low):
            raise argparse.ArgumentTypeError(f"must be {'more than' if low_open else 'at least'} {low}{what}, "
                                             f"got {text}")
        if high is not None and (v >= high if high_open else v > high):
            raise argparse.ArgumentTypeError(f"must be {'less than' if high_open else 'at most'} {high}{what}, "
                                             f"got {text}")
        return v
    parse.__name__ = kind.__name__   # argparse names the type in some messages
    return parse


positive_int = _number(int, 1)
nonneg_int = _number(int, 0)
positive_float = _number(float, 0, low_open=True)
nonneg_float = _number(float, 0)


def share(text: str) -> float:
    v = _number(float)(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"is a share of images: give a number between 0 and 1, e.g. 0.02; got {text}")
    return v


warmup_share = _number(float, 0, 1, high_open=True, what=" (a share of the steps)")
iou_threshold = _number(float, 0, 1, what=" (an IoU)")


def score(text: str) -> float:
    v = _number(float)(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"is a score, P(generated): give a number strictly between 0 and 1, e.g. "
                                         f"0.9; got {text}")
    return v


def duration(text: str) -> float:
    """Seconds from 8h, 90m, 45s, 1h30m or a plain number of seconds."""
    import re
    t = text.strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)(s?))?", t)
    # a bare number is seconds only on its own: 1h30 is ambiguous (1h30m? 1h30s?)
    if not t or not m or not any(m.groups()[:3]) or (m.group(3) and not m.group(4) and (m.group(1) or m.group(2))):
        raise argparse.ArgumentTypeError(f"takes a duration such as 8h, 90m, 1h30m or 3600 (seconds); got {text!r}")
    h, mi, sec = (float(g) if g else 0.0 for g in m.groups()[:3])
    v = h * 3600 + mi * 60 + sec
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than zero, got {text!r}")
    return v


def label_list(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"takes class names separated by commas, e.g. fake or sd,midjourney; "
                                         f"got {text!r}")
    return names


def cascade_names(text: str) -> tuple[str, str]:
    names = [t.strip() for t in text.split(",")]
    if len(names) != 2 or not all(names):
        raise argparse.ArgumentTypeError(f"takes two backends, first,second (e.g. compact,vlm); got {text!r}")
    for n in names:
        backend_name(n)
    if names[0] == names[1]:
        raise argparse.ArgumentTypeError(f"the two tiers must be different backends, got {text!r}")
    return names[0], names[1]


def band(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes LOW:HIGH, two scores, e.g. 0.2:0.9; got {text!r}") from None
    if not sep or not 0 <= lo < hi <= 1:
        raise argparse.ArgumentTypeError(f"takes LOW:HIGH with 0 <= LOW < HIGH <= 1, e.g. 0.2:0.9; got {text!r}")
    return lo, hi


def backend_name(text: str) -> str:
    # Test doubles (e.g. "fake") are accepted but not offered: they are not a user's choice.
    if text not in BACKENDS:
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}{_suggest(text, available())}; "
                                         f"choose from {', '.join(available())}")
    return text


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """Errors in one line with the command's name, a suggestion for a misspelled flag or choice,
    and exit 2 - not argparse's usage block."""

    def error(self, message: str):
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            message += _suggest(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def _check_flags(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuse a flag the command does not have, with the closest one it does, before argparse
    would complain about a missing required flag instead (a mistyped --out reads as none)."""
    sub = _subparser(parser, argv)
    if sub is None:
        return
    flags = [s for action in sub._actions for s in action.option_strings]
    for token in argv[argv.index(sub.prog.split()[-1]) + 1:]:
        if token == "--":
            break
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            if not any(f.startswith(name) for f in flags):   # argparse takes unambiguous prefixes
                sub.error(f"unrecognized argument {name}{_suggest(name, [f for f in flags if f.startswith('--')])}")


def _subparser(parser: argparse.ArgumentParser, argv: list[str]):
    choices = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = next((t for t in argv if not t.startswith("-")), None)
    return choices.get(command)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(next((t for t in argv if not t.startswith("-")), None))
    _check_flags(parser, argv)
    return parser.parse_args(argv)


# -- the commands' flags -------------------------------------------------------------------------

def _verbose(p, ray: bool = False) -> None:
    # SUPPRESS: given after the command it sets the flag; absent, it leaves the top level's value.
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log more detail" + (", including Ray's own messages" if ray else ""))


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
    g.add_argument("--retries", type=positive_int, default=None,
                   help="attempts per request and per object on throttling, 5xx and dropped connections (default 8)")


def _add_scan(sub) -> None:
    p = sub.add_parser("scan", help="scan images for AI generation: boxes, verdicts, rationales",
                       description="Scan every file under SRC (recursively; hidden files skipped) and write one "
                                   "Parquet row per image to --out. SRC and --out may be local or any fsspec URL "
                                   "(s3://, gs:// with gcsfs installed).")
    p.add_argument("src", nargs="?", default=None,
                   help="folder or prefix (recursive), glob pattern (quote it) or one object; "
                        "default: the bundled samples")
    p.add_argument("--out", default=None,
                   help="output folder or prefix for the Parquet results (must be new or empty); required "
                        "unless --estimate")
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
    p.add_argument("--estimate", action="store_true",
                   help="write nothing: time the job on a sample of SRC on this cluster (same plan), then print "
                        "images/s, the start-up, the time for the whole source and, with --deadline, the nodes "
                        "it needs; with --cascade each tier's cost. An --out given is checked as the scan would, "
                        "and left untouched")
    p.add_argument("--estimate-sample", type=positive_int, default=None, metavar="N",
                   help="with --estimate: objects (or shards) to time, spread over the listing (default: the "
                        "larger of 256 and four calls per model actor; below about 60 no steady rate can be read)")
    p.add_argument("--deadline", type=duration, default=None, metavar="DURATION",
                   help="with --estimate: how long the whole scan may take, e.g. 8h, 90m, 1h30m or 3600 (seconds); "
                        "the estimate prints how many nodes like this cluster's it needs, and exits 1 when this "
                        "cluster would not finish in time")
    p.add_argument("--incremental", action="store_true",
                   help="--out holds a complete run of this job: scan only the images not in it yet (new keys), "
                        "append their rows, leave the earlier rows untouched; the settings must be the same")
    p.add_argument("--rescan", action="store_true",
                   help="--out holds a run of this job: clear its results and scan everything again "
                        "(e.g. after a model or setting change)")
    p.add_argument("--allow-root", action="append", default=[], metavar="PREFIX",
                   help="a manifest may only point under these prefixes (repeatable; '*' for any). Default: "
                        "object-store URIs (s3://, gs://, ...) and local files under the manifest's own folder; "
                        "any other scheme (https://, ...) only under a prefix named here")
    p.add_argument("--backend", default=None, type=backend_name, metavar="{" + ",".join(available()) + "}",
                   help="model backend (default: compact, the bundled CPU detector; vlm: a vision-language "
                        "checkpoint given by --model; classifier: any Hugging Face image classifier given by --model)")
    p.add_argument("--model", action="append", default=None, metavar="[BACKEND=]PATH",
                   help="weights / checkpoint: local path or s3://... (fetched once per node into "
                        "$ZOOMIN_CACHE, default ~/.cache/zoomin); default: the backend's bundled weights. "
                        "With --cascade, one per tier: --model compact=PATH --model vlm=s3://...")
    p.add_argument("--cascade", default=None, type=cascade_names, metavar="FIRST,SECOND",
                   help="two backends, e.g. compact,vlm: the first judges every image, the second only those "
                        "whose first score lies in --escalate; every tier's verdict is kept in the 'tiers' "
                        "column and 'decided_by' names the one that stands")
    p.add_argument("--escalate", default=None, type=band, metavar="LOW:HIGH",
                   help="with --cascade: first-tier scores from LOW up to (not including) HIGH go to the second "
                        "tier; below LOW the first tier's 'real' stands, from HIGH its 'generated' (default: "
                        "the compact weights' band, `zoomin evaluate --target-fpr` prints one for your photos)")
    p.add_argument("--threshold", type=score, default=None, metavar="SCORE",
                   help="verdict 'generated' at this score or more, e.g. the one `zoomin evaluate --target-fpr` "
                        "printed for your labelled photos; the 'threshold' column records what applied (default: "
                        "compact: the weights' archive operating point, about 1%% of unseen real photos flagged, "
                        "or 0.5 with --prior; vlm: the model's own answer; classifier: 0.5)")
    c = p.add_argument_group("compact backend")
    c.add_argument("--prior", type=share, default=None, metavar="SHARE",
                   help="the share of generated images you expect in this archive, e.g. 0.02: scores and "
                        "verdicts become P(generated) at that share instead of the one the weights were "
                        "calibrated on (about 0.6 for the default weights), so far fewer real photos are "
                        "flagged; ranking is unchanged; the 'prior' column records it (default: the weights' share)")
    g = p.add_argument_group("vlm backend")
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="prompt templates (JSON with version, scan, zoom; default: the shipped zoomin-prompts-v1)")
    g.add_argument("--keep-raw", action="store_true", help="keep the model's own text in the 'raw' column, for audit")
    g.add_argument("--max-new-tokens", type=positive_int, default=256,
                   help="cap on tokens generated per query (default 256)")
    g.add_argument("--max-image-pixels", type=positive_int, default=None,
                   help="pixel budget of the whole image per query (default: the checkpoint's processor setting)")
    g.add_argument("--crop-pixels", type=positive_int, default=448 * 448,
                   help="each crop is resized to about this many pixels, so small regions are magnified "
                        "(default 200704 = 448x448)")
    k = p.add_argument_group("classifier backend", "A Hugging Face image-classifier checkpoint folder (config.json, "
                             "preprocessor_config.json, *.safetensors) run through the scan and the zoom; "
                             "docs/classifier.md")
    k.add_argument("--generated-labels", type=label_list, default=None, metavar="NAME[,NAME...]",
                   help="the checkpoint's classes that mean generated (all others: real); default: read from its "
                        "id2label names (fake, ai, generated, synthetic, ... against real, human, natural, ...)")
    k.add_argument("--max-tiles", type=positive_int, default=None,
                   help="most scan tiles per image; an image that would need more is tiled with larger tiles, "
                        "each resized to the input size (default 64)")
    k.add_argument("--tile-overlap", type=_number(float, 0, 0.9), default=None,
                   help="share of a scan tile's side its neighbours overlap, 0 to 0.9 (default 0.5)")
    k.add_argument("--zoom-tiles", type=positive_int, default=None,
                   help="most native-resolution tiles scored per zoomed region; larger regions are sampled "
                        "evenly (default 9)")
    m = p.add_argument_group("the method")
    m.add_argument("--stages", default="scan,zoom", choices=STAGE_CHOICES, metavar="STAGES",
                   help="'scan,zoom' (the method: look, then zoom into regions; the default) or 'scan' (first "
                        "look only)")
    m.add_argument("--max-boxes", type=positive_int, default=4, help="most regions zoomed into per image (default 4)")
    m.add_argument("--c2pa-trust", default=None, metavar="FILE",
                   help="PEM file of trust anchors for C2PA signers: a signed capture claim whose signer chains to "
                        "one decides 'real' (default: none; capture claims are recorded and never decide)")
    m.add_argument("--examine-all", action="store_true",
                   help="also run the models on images whose provenance marks say they were generated (C2PA, "
                        "IPTC DigitalSourceType, generator text chunks, Stable Diffusion watermarks), for their "
                        "boxes; the verdict stays the mark's (default: such images are decided by provenance, "
                        "without the models)")
    m.add_argument("--margin", type=_number(float, 0, 10), default=0.15,
                   help="context added around each region before cropping, as a fraction of its size (default 0.15)")
    m.add_argument("--min-crop-side", type=positive_int, default=64,
                   help="smallest crop side in original pixels (default 64)")
    m.add_argument("--view-size", type=_number(int, 16), default=None,
                   help="longest side of the reduced image the scan looks at; keep the size the weights learned on "
                        f"(`zoomin train --view-size`; default {DecodeConfig.view_max_side}, as the bundled weights; "
                        "classifier: the side its --max-tiles tiles of the input size cover, 1008 px for 224 px "
                        "inputs)")
    m.add_argument("--max-pixels", type=positive_int, default=DecodeConfig.max_pixels,
                   help=f"refuse images larger than this many pixels as too_large (default {DecodeConfig.max_pixels:,})")
    m.add_argument("--max-bytes", type=positive_int, default=512 * 1024 * 1024,
                   help="refuse files larger than this many bytes as too_large (default 512 MiB)")
    r = p.add_argument_group("Ray")
    r.add_argument("--address", default=None,
                   help="join an existing Ray cluster ('auto', 'ray://host:10001'); default: start a local one")
    r.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the local Ray cluster (default: all)")
    r.add_argument("--actors", type=positive_int, default=None,
                   help="model actors (copies of the model); default: sized from the cluster's CPUs/GPUs")
    r.add_argument("--actor-cpus", type=positive_float, default=None,
                   help="CPUs per model actor, also its torch thread count (default: 1 on machines of 4 CPUs or "
                        "more; on smaller ones the CPUs the decode tasks leave, if any, shared by one actor per "
                        "core, or by --actors)")
    r.add_argument("--gpus-per-actor", type=nonneg_float, default=0.0,
                   help="GPUs per model actor; fractions share a GPU (default 0: CPU)")
    r.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per model call (default: 32 on CPU with the compact detector when the actors "
                        "decode their own images; 8 with decode tasks, or with a VLM or classifier checkpoint on "
                        "CPU; 16 on GPU)")
    r.add_argument("--decode", default="auto", choices=("auto", "actors", "tasks"),
                   help="where images are read and decoded: in the model actors, each its own images, or in "
                        "CPU tasks that feed them (auto, the default: in the actors on CPU-only plans, in tasks "
                        "with GPUs or split stages)")
    r.add_argument("--split-stages", default="auto", choices=("auto", "on", "off"),
                   help="separate scan and zoom actor pools with CPU crop tasks between them, so GPU actors "
                        "only run the model (auto, the default: on when --gpus-per-actor > 0)")
    r.add_argument("--rows-per-file", type=positive_int, default=None,
                   help="rows per output Parquet file: files hold at most this many, and write tasks gather "
                        "this many before writing (default: one file per block)")
    r.add_argument("--stall-timeout", type=nonneg_float, default=300.0, metavar="SECONDS",
                   help="after a node of the cluster is lost, a scan that commits no results for this long is "
                        "stopped and what is still missing is run again (Ray can leave a dead node's task "
                        "unfinished); 0 turns this off (default 300)")
    r.add_argument("--max-restarts", type=nonneg_int, default=3,
                   help="most such restarts before the scan gives up, keeping what was committed (default 3)")
    r.add_argument("--progress-every", type=positive_float, default=30.0, metavar="SECONDS",
                   help="when the output is not a terminal (logs), print a progress line this often (default 30); "
                        "on a terminal the line updates in place")
    r.add_argument("--no-progress", action="store_true", help="print no progress while scanning")
    _add_storage(p)
    _verbose(p, ray=True)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML page of scan results",
                       description="One HTML file (images embedded) to review a scan: a grid of the most "
                                   "suspicious images first, boxes coloured by score, click to enlarge and see "
                                   "the crops that were zoomed into, filters by verdict and status.")
    p.add_argument("results", help="folder written by `zoomin scan --out`")
    p.add_argument("--out", required=True, help="HTML file to write (its folder must exist)")
    p.add_argument("--limit", type=positive_int, default=500,
                   help="most images shown, most suspicious first (default 500)")
    _add_storage(p)
    _verbose(p)


def _add_synth(sub, full: bool = True) -> None:
    p = sub.add_parser("synth", help="make a labelled set of real and generated images, offline",
                       description="Make a labelled set offline: real photos (packaged with scikit-image and "
                                   "scikit-learn, the 'synth' extra, or your --real-dir), and images wholly or "
                                   "partly regenerated by small generator families trained here. Writes images/ "
                                   "and labels.jsonl (label, kind, source family, split, true boxes) for "
                                   "`zoomin train` and `zoomin evaluate`.")
    if not full:
        return
    from zoomin_core.generators import DEFAULT_FAMILIES, FAMILIES
    from zoomin_core.synth import SynthConfig
    p.add_argument("--out", required=True, help="folder for images/ and labels.jsonl")
    p.add_argument("--count", type=positive_int, default=SynthConfig.count,
                   help=f"number of images (default {SynthConfig.count}: 40%% real, 20%% wholly and 40%% "
                        "regionally generated)")
    p.add_argument("--families", default=",".join(DEFAULT_FAMILIES),
                   help=f"generator families, comma-separated (default {','.join(DEFAULT_FAMILIES)}; known: "
                        f"{', '.join(FAMILIES)})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--real-dir", default=None,
                   help="folder of your own real photos (default: photos shipped in scikit-image/scikit-learn, "
                        "the 'synth' extra)")
    p.add_argument("--jpeg-quality", type=_number(int, 1, 100), default=SynthConfig.jpeg_quality,
                   help=f"the final encoding of every image (default {SynthConfig.jpeg_quality})")
    p.add_argument("--generator-steps", type=positive_int, default=SynthConfig.generator_steps,
                   help=f"training steps of each generator family (default {SynthConfig.generator_steps}, 7-60 s each on 2 cores)")
    p.add_argument("--defocus", type=_number(float, 0, 1), default=SynthConfig.defocus,
                   help="share of photo crops given a patch of simulated defocus (optical blur with sensor noise "
                        "on top), real and generated alike: smooth areas that are real "
                        f"(default {SynthConfig.defocus})")
    p.add_argument("--calib-share", type=_number(float, 0, 1), default=SynthConfig.calib_share,
                   help="share of images made from photos kept out of all training and used only for the calib "
                        "and test splits, so that the score calibration knows photos the detector never saw "
                        f"(default {SynthConfig.calib_share}; packaged photos: {', '.join(SynthConfig.calib_photos)}; "
                        "your own folder: every seventh photo; 0: none)")
    _verbose(p)


def _add_train(sub, full: bool = True) -> None:
    p = sub.add_parser("train", help="train the compact detector",
                       description="Train on a `zoomin synth` set (LABELS) and/or your own folders. Splits: "
                                   "'train' fits the networks, 'calib' the score calibration; 'test' and "
                                   "'holdout' are evaluated and the figures stored in the weights.")
    if not full:
        return
    from zoomin_core.train import TrainConfig
    p.add_argument("labels", nargs="?", default=None, help="labels.jsonl written by `zoomin synth`")
    p.add_argument("--real", default=None, help="folder of real images (your own labelled data)")
    p.add_argument("--generated", default=None, help="folder of generated images (your own labelled data)")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    p.add_argument("--version", default="custom", help="version string recorded in the weights and every output row")
    p.add_argument("--exclude-source", action="append", default=[],
                   help="leave this generator family (a label's 'source') out of training and calibration; repeatable")
    p.add_argument("--scan-steps", type=positive_int, default=TrainConfig.scan_steps,
                   help=f"training steps of the scan network (default {TrainConfig.scan_steps})")
    p.add_argument("--zoom-steps", type=positive_int, default=TrainConfig.zoom_steps,
                   help=f"training steps of the zoom network (default {TrainConfig.zoom_steps})")
    p.add_argument("--view-size", type=_number(int, 16), default=DecodeConfig.view_max_side,
                   help="longest side of the reduced image the scan net learns on; scan with the same "
                        f"--view-size (default {DecodeConfig.view_max_side})")
    p.add_argument("--device", default="auto",
                   help="where the networks learn: 'cpu', 'cuda' or 'cuda:N'; 'auto' takes the first GPU torch sees, "
                        "else the CPU. Calibration and validation run on the CPU either way, as a scan on CPU nodes "
                        "would score (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _verbose(p)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a scan's results against labels",
                       description="Join RESULTS (a `zoomin scan --out` folder) with LABELS by image path and "
                                   "print accuracy, precision/recall/F1, ROC-AUC, calibration (ECE, and the ECE a "
                                   "perfectly calibrated model would show on that many images), box IoU, "
                                   "region recall at IoU 0.5 and flip rate, overall and per kind, source and split.")
    p.add_argument("results", help="folder written by `zoomin scan --out`")
    p.add_argument("--labels", required=True,
                   help="labels: JSONL, or CSV/TSV (by extension), with 'file' (relative to the labels file) or 'uri', "
                        "'label' (real/generated; 0/1 and fake/ai also read), optional 'kind', 'source', 'split', "
                        "'boxes' ([[x1,y1,x2,y2], ...])")
    p.add_argument("--split", default=None, help="evaluate only labels of this split (e.g. test)")
    p.add_argument("--target-fpr", type=share, default=None, metavar="SHARE",
                   help="also print the threshold that flags at most this share of the real images (e.g. 0.01), "
                        "the recall it keeps (use it with `zoomin scan --threshold`), and the --escalate band "
                        "that keeps --target-recall in a cascade")
    p.add_argument("--target-recall", type=share, default=0.9, metavar="SHARE",
                   help="with --target-fpr: the recall the escalation band keeps (default 0.9)")
    p.add_argument("--json", default=None, help="also write the full report to this JSON file")
    _add_storage(p)
    _verbose(p)


def _add_relabel(sub) -> None:
    p = sub.add_parser("relabel", help="where a scan and your labels disagree: a list and a review page",
                       description="Join RESULTS with LABELS and write, to the REVIEW folder, every image whose "
                                   "verdict contradicts its label, most confident disagreements first: "
                                   "disagreements.parquet (the scan's rows plus 'label' and 'confidence') and "
                                   "review.html (boxes, crops and the rationale that make the model's case).")
    p.add_argument("results", help="folder written by `zoomin scan --out`")
    p.add_argument("--labels", required=True, help="labels, as `zoomin evaluate --labels` reads them")
    p.add_argument("--out", required=True, help="review folder (created)")
    _add_storage(p)
    _verbose(p)


def _add_annotate(sub) -> None:
    p = sub.add_parser("annotate", help="labelled images -> training examples for the two queries (Parquet)",
                       description="Write, for every labelled image, what each of the method's two queries should "
                                   "answer (explanation, regions, verdict; the zoom's rationale), from its label and "
                                   "true boxes or by a --teacher model told the label, as Parquet, plus "
                                   "messages.jsonl (the chat-messages format TRL reads), summary.json and "
                                   "review.html. Run again after a kill, it finishes the rest.")
    p.add_argument("labels", help="labels file, as `zoomin evaluate --labels` reads it (file or uri, label, "
                                  "optional boxes)")
    p.add_argument("--out", required=True, help="dataset folder or prefix (new, or this command's own)")
    p.add_argument("--chunk", type=positive_int, default=64, help="images per task and per part file (default 64)")
    p.add_argument("--teacher", default=None, metavar="CKPT",
                   help="a vision-language checkpoint (local or s3://) that writes the answers, told the label; "
                        "annotations that do not hold up are dropped (default: templates from the labels)")
    p.add_argument("--min-iou", type=iou_threshold, default=0.5,
                   help="--teacher: the teacher's regions must meet known true boxes at this mean IoU (default 0.5)")
    p.add_argument("--teacher-actors", type=positive_int, default=1,
                   help="--teacher: Ray actors holding a copy of the teacher (default 1)")
    p.add_argument("--gpus-per-actor", type=nonneg_float, default=0.0,
                   help="--teacher: GPUs per teacher actor (default 0: CPU)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256,
                   help="--teacher: longest answer the teacher may write, per query (default 256)")
    p.add_argument("--review", type=nonneg_int, default=100, metavar="N",
                   help="examples in review.html, the page to look through (default 100; 0: no page; "
                        "local --out only)")
    p.add_argument("--address", default=None, help="join a running Ray cluster (default: start a local one)")
    _add_storage(p)
    _verbose(p, ray=True)


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a vision-language checkpoint on an annotated dataset (Ray Train)",
                       description="Supervised fine-tuning of both queries (only the answers are learned) on Ray "
                                   "Train: LoRA adapters merged at the end (default) or every weight (--full). "
                                   "The result is a checkpoint folder `zoomin scan --backend vlm --model OUT` loads. "
                                   "Run again after a kill, it resumes from its latest checkpoint.")
    p.add_argument("dataset", help="folder written by `zoomin annotate --out`")
    p.add_argument("--base", required=True, help="the vision-language checkpoint to start from (local or s3://)")
    p.add_argument("--out", required=True, help="folder for the fine-tuned checkpoint (local or s3://)")
    p.add_argument("--full", action="store_true", help="train every weight instead of LoRA adapters")
    p.add_argument("--lora-rank", type=positive_int, default=16, help="rank of the LoRA adapters (default 16)")
    p.add_argument("--epochs", type=positive_float, default=3.0, help="passes over the examples (default 3)")
    p.add_argument("--steps", type=positive_int, default=None, help="optimiser steps (overrides --epochs)")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 2e-4 LoRA, 2e-5 --full)")
    p.add_argument("--warmup", type=warmup_share, default=0.05,
                   help="share of the steps over which the rate rises to --lr before its cosine fall to 0 (default 0.05)")
    p.add_argument("--batch-size", type=positive_int, default=4,
                   help="queries per optimiser step per worker, accumulated (default 4)")
    p.add_argument("--workers", type=positive_int, default=1, help="Ray Train workers (data-parallel; default 1)")
    p.add_argument("--gpus-per-worker", type=nonneg_float, default=0.0, help="GPUs per worker (default 0: CPU, gloo)")
    p.add_argument("--checkpoint-every", type=positive_int, default=50, help="steps between checkpoints (default 50)")
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="where training checkpoints go (a folder every worker's node sees; default "
                        "$ZOOMIN_CACHE/finetune)")
    p.add_argument("--prompts", default=None, metavar="FILE", help="prompt templates to train (default: the shipped v1)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--address", default=None, help="join a running Ray cluster (default: start a local one)")
    _add_storage(p)
    _verbose(p, ray=True)


def _add_submit(sub) -> None:
    p = sub.add_parser("submit", help="run a zoomin command as a job on a running Ray cluster (Ray Jobs API)",
                       description="Submit `zoomin COMMAND ...` (given after '--') to a Ray cluster through its "
                                   "Jobs API. The job carries this version of zoomin; paths are read on the cluster. "
                                   "A cluster started with Ray's defaults asks for its token: set RAY_AUTH_MODE=token "
                                   "and give the token (see docs/operations.md).")
    p.add_argument("--address", required=True, help="the cluster's dashboard / Jobs API, e.g. http://head:8265")
    p.add_argument("--follow", action="store_true", help="stream the job's logs until it ends; exit with its status")
    p.add_argument("--wait", action="store_true", help="wait until the job ends (no logs); exit with its status")
    p.add_argument("--submission-id", default=None, help="the job's id (default: chosen by Ray)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the job (repeatable)")
    p.add_argument("job", nargs=argparse.REMAINDER, help="-- followed by the zoomin command, e.g. -- scan SRC --out DST")
    _verbose(p, ray=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("zoomin")
    except PackageNotFoundError:   # run from a checkout that was never installed
        return "(not installed)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's flags; given `command`, the flags of synth and train only when it is theirs:
    their defaults live in modules that import torch (about 1 s), which no other command's
    process needs before its work starts."""
    parser = Parser(prog="zoomin", description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail, including Ray's own messages")
    parser.add_argument("--version", action="version", version=f"zoomin {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_scan, _add_report, _add_evaluate, _add_relabel, _add_synth, _add_train, _add_annotate,
                _add_finetune, _add_submit):
        if add in (_add_synth, _add_train):
            add(sub, full=command is None or command == add.__name__[len("_add_"):])
        else:
            add(sub)
    return parser
