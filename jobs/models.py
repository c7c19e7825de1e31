"""Model checkpoints from object storage: fetched once per node into a local cache.

`--model s3://bucket/path/` (one file or a prefix holding a checkpoint folder) is downloaded by
the first model actor on each node; the others wait on a file lock and reuse it. The cache entry
is named by the remote files' names, sizes and ETags, so a later run reuses it while the remote
copy is unchanged and fetches again when it changes. A download goes to a temporary folder,
is checked (every file's size; safetensors headers parse), and is renamed into place only then:
an interrupted download never leaves an entry that looks complete.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Optional

from .storage import StorageConfig, filesystem, is_remote, redact, retrying

COMPLETE = ".complete"


class ModelError(Exception):
    """The checkpoint cannot be found or fetched: the job stops before reading any image."""


def cache_root() -> Path:
    return Path(os.environ.get("ZOOMIN_CACHE", Path.home() / ".cache" / "zoomin")) / "models"


def _remote_files(uri: str, storage: StorageConfig) -> tuple[object, str, dict, bool]:
    """(fs, root path, {relative name: info}, is a folder) of the checkpoint at `uri`."""
    fs, path = filesystem(uri.rstrip("/"), storage)
    fs.invalidate_cache()  # a listing cached earlier in this process may predate a new upload
    try:
        folder = fs.isdir(path)
        if folder:
            infos = {p[len(path):].lstrip("/"): i for p, i in fs.find(path, detail=True).items()
                     if i.get("type") == "file"}
            infos = {k: v for k, v in infos.items() if not any(s.startswith(".") for s in k.split("/"))}
            root = path
        elif fs.exists(path):
            infos, root = {path.rsplit("/", 1)[-1]: fs.info(path)}, path.rsplit("/", 1)[0]
        else:
            infos, root = {}, path
    except OSError as e:
        raise ModelError(f"--model {uri}: cannot list it: {redact(str(e), storage)}") from None
    if not infos:
        raise ModelError(f"--model {uri}: no such checkpoint (no file or prefix there)")
    if not any(k.endswith(".safetensors") for k in infos):
        raise ModelError(f"--model {uri}: no .safetensors file there (found: {', '.join(sorted(infos)[:5])}); "
                         "only safetensors checkpoints are loaded")
    return fs, root, infos, folder


def _fingerprint(infos: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(infos):
        i = infos[name]
        h.update(json.dumps([name, i.get("size"), str(i.get("ETag") or i.get("etag") or i.get("mtime") or "")]).encode())
    return h.hexdigest()[:16]


def _check_safetensors(path: Path) -> None:
    """The header of a safetensors file parses and its tensors fit in the file."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, AttributeError, OverflowError, MemoryError) as e:
        raise ModelError(f"{path.name}: not a readable safetensors file (truncated or corrupt"
                         f"{': ' + str(e) if str(e) else ''})") from None
    if 8 + n + end != path.stat().st_size:
        raise ModelError(f"{path.name}: safetensors file is truncated or padded")


_checked: dict = {}   # (model, backend, labels) -> what check_model found: the CLI and run_scan both ask


def check_model(model: Optional[str], storage: StorageConfig = StorageConfig(), backend: str = "compact",
                generated_labels: tuple = ()) -> dict:
    """Fail early (in the driver, before any image is read) when `model` is not there or is not
    a checkpoint the backend loads. Returns what the job needs to know of it: for a classifier
    its input side ("input_side") and how its labels map ("labels")."""
    key = (model, backend, tuple(generated_labels))
    if key in _checked:
        return _checked[key]
    if backend in ("vlm", "classifier"):
        import importlib.util
        if importlib.util.find_spec("transformers") is None:
            raise ModelError(f"the {backend} backend needs the {backend} extra (transformers is not installed): "
                             f"bash scripts/setup.sh ray,{backend}")
    if model is None:
        if backend in ("vlm", "classifier"):
            raise ModelError(f"the {backend} backend needs --model (with --cascade: --model {backend}=PATH): a "
                             "checkpoint folder, local or s3://")
        return {}
    fs = root = None
    if is_remote(model):
        fs, root, infos, folder = _remote_files(model, storage)
        names = list(infos)
    elif not Path(model).exists():
        raise ModelError(f"--model {model}: no such file or folder")
    else:
        folder = Path(model).is_dir()
        names = [str(f.relative_to(model)) for f in Path(model).rglob("*") if f.is_file()] if folder else [model]
    if backend == "vlm":
        from zoomin_core.backends.vlm_families import missing_files
        missing = missing_files(names) if folder else ["a checkpoint folder (config.json, *.safetensors, tokenizer)"]
        if missing:
            raise ModelError(f"--model {model}: incomplete checkpoint, missing {', '.join(missing)}"
                             f"{_other_backend(model, backend)}")
    info: dict = {}
    if backend == "classifier":
        info = _check_classifier(model, names if folder else [], storage, generated_labels, fs, root)
    if not is_remote(model):
        _check_loads(Path(model), backend, generated_labels)
    _checked[key] = info
    return info


def _check_classifier(model: str, names: list, storage: StorageConfig, generated_labels: tuple, fs, root) -> dict:
    """The classifier checkpoint's files are there, its config names an image classifier and its
    labels map (read from object storage too: two small JSON files)."""
    from zoomin_core.backends.classifier_checkpoint import REQUIRED, missing, parse
    from zoomin_core.backends.vlm_families import CheckpointError
    if not names:
        raise ModelError(f"--model {model}: the classifier backend needs a checkpoint folder ({', '.join(REQUIRED)}, "
                         "*.safetensors) as save_pretrained writes it, not a single file")
    lacking = missing([n for n in names if "/" not in n])
    if lacking:
        raise ModelError(f"--model {model}: incomplete checkpoint, missing {'; '.join(lacking)}")
    try:
        texts = {n: (retrying(lambda n=n: fs.cat_file(f"{root}/{n}"), storage).decode("utf-8", "replace") if fs
                     else (Path(model) / n).read_text(errors="replace")) for n in REQUIRED}
        _, labels, pre = parse(texts, generated_labels, f"--model {model}: ")
    except CheckpointError as e:
        raise ModelError(str(e)) from None
    except OSError as e:
        raise ModelError(f"--model {model}: cannot read it: {redact(str(e), storage)}") from None
    return {"input_side": pre.side, "labels": labels.describe()}


def _check_loads(path: Path, backend: str, generated_labels: tuple = ()) -> None:
    """A local model opens here as it will in every actor: a file that is not the backend's
    weights is refused now, in one line, not in a traceback from each actor."""
    try:
        if backend == "compact":
            from zoomin_core.compact_model import CompactModel
            CompactModel.load(path)
        elif backend in ("vlm", "classifier"):
            for f in path.rglob("*.safetensors"):
                _check_safetensors(f)
            if backend == "vlm":
                from transformers import AutoConfig
                AutoConfig.from_pretrained(str(path))
            else:   # the weights load and fill the model (a missing tensor would be random)
                from zoomin_core.backends.classifier import ClassifierBackend
                ClassifierBackend(str(path), generated_labels)
    except ModelError as e:
        raise ModelError(f"--model {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - whatever the loader says, in one line
        from zoomin_core.backends.vlm_families import CheckpointError
        if isinstance(e, CheckpointError):
            raise ModelError(str(e)) from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"--model {path}: not {'compact weights' if backend == 'compact' else 'a checkpoint'} "
                         f"this version can load ({type(e).__name__}: {first[:200]})"
                         f"{_other_backend(str(path), backend)}") from None


def _other_backend(model: str, backend: str) -> str:
    """' - it looks like ...: --backend X' when a local checkpoint is another backend's kind."""
    try:
        kind = json.loads((Path(model) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return ""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as CLASSIFIERS

    from zoomin_core.backends.vlm_families import FAMILIES
    if kind in CLASSIFIERS and backend != "classifier":
        return " - it looks like a Hugging Face image classifier: --backend classifier"
    if any(kind in f.model_types for f in FAMILIES.values()) and backend != "vlm":
        return " - it looks like a vision-language checkpoint: --backend vlm"
    return ""


def check_model_for(flag: str, model: str, storage: StorageConfig = StorageConfig(), backend: str = "vlm") -> dict:
    """check_model for a command whose flag is not --model (annotate --teacher, finetune --base):
    its refusals name that flag."""
    try:
        return check_model(model, storage, backend)
    except ModelError as e:
        msg = str(e)
        raise ModelError(flag + msg[len("--model"):] if msg.startswith("--model ") else msg) from None


def checkpoint_digest(model: str, storage: StorageConfig = StorageConfig()) -> str:
    """What stands for a checkpoint folder's content in the run record, cheaply: each file's name
    and size, the JSON files' text and the safetensors headers (local); names, sizes and ETags
    (object storage). A checkpoint saved again under the same path reads as another model."""
    if is_remote(model):
        return _fingerprint(_remote_files(model, storage)[2])
    h = hashlib.sha256()
    root = Path(model)
    for f in sorted(p for p in (root.rglob("*") if root.is_dir() else [root]) if p.is_file()):
        h.update(f"{f.relative_to(root) if root.is_dir() else f.name}:{f.stat().st_size}".encode())
        if f.suffix == ".json" and f.stat().st_size < 50_000_000:
            h.update(f.read_bytes())
        elif f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                head = fh.read(8)
                n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
                h.update(fh.read(min(n, 100_000_000)))
    return h.hexdigest()


def fetch_model(uri: str, storage: StorageConfig = StorageConfig(),
                cache: Optional[Path] = None) -> tuple[str, bool]:
    """Local path of the checkpoint at `uri`, and whether this call downloaded it.

    Local paths are returned as they are. The returned path is a file when `uri` names one file,
    else the checkpoint folder.
    """
    if not is_remote(uri):
        return uri, False
    fs, root, infos, folder = _remote_files(uri, storage)
    base = (cache or cache_root()) / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    entry = base / _fingerprint(infos)
    result = str(entry) if folder else str(entry / next(iter(infos)))
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per node; the other actors wait here
        if (entry / COMPLETE).exists():
            return result, False
        tmp = base / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for name, info in infos.items():
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                retrying(lambda: fs.get_file(f"{root}/{name}", str(dst)), storage)
                if dst.stat().st_size != int(info.get("size") or 0):
                    raise ModelError(f"{name}: downloaded {dst.stat().st_size} bytes, expected {info.get('size')}")
                if name.endswith(".safetensors"):
                    _check_safetensors(dst)
            (tmp / COMPLETE).write_text(json.dumps({"uri": uri, "files": sorted(infos)}))
            for old in base.iterdir():  # earlier versions of this checkpoint
                if old.is_dir() and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
            tmp.rename(entry)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"--model {uri}: download failed: {redact(str(e), storage)}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return result, True
