"""Sources: plan SRC into a table of work units in the driver, and read them inside Ray tasks.

Planning keeps only keys and sizes (an Arrow table: uri, size, kind, extra): from a listing of a
folder, prefix or glob on any fsspec filesystem, or from a manifest. A unit is one object
(`file`) or one shard holding many images (`tar`: WebDataset-style; `parquet`: image bytes in a
named column). Bytes are only read in the tasks, object by object or member by member, with no
copy to local disk. A file's content decides whether it is an image, never its extension;
inside shards, members are chosen by their extension, as WebDataset does.

Output uris: the object's full URI; for a shard member, the shard's URI, "#", and the member
name (tar) or the row number (Parquet).
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import stat
import tarfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import pyarrow as pa

from zoomin_core.records import STATUS_TOO_LARGE, STATUS_UNSUPPORTED, ImageInput

from .storage import (StorageConfig, explain, filesystem, full_uri, is_client_error, is_local_fs, is_remote, redact,
                      retrying)

SAMPLES_DIR = Path(__file__).parent / "samples"

KIND_FILE, KIND_TAR, KIND_PARQUET = "file", "tar", "parquet"
INPUT_FORMATS = ("auto", "files", "tar", "parquet")
KIND_REFUSED = "refused"   # a manifest entry outside the allowed roots: an error row, never read
UNLISTED_KEY = "zoomin.unlisted"  # plan metadata: folders that could not be listed
# skip: JSON list of a shard's members already done (a resumed run passes over them).
PLAN_SCHEMA = pa.schema([("uri", pa.string()), ("size", pa.int64()), ("kind", pa.string()),
                         ("extra", pa.string()), ("skip", pa.string())])
IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pbm",
              "jp2", "avif", "heic", "heif", "jxl"}
URI_COLUMNS = ("uri", "url", "path", "key", "file")
SIZE_COLUMNS = ("size", "bytes")


class SourceError(Exception):
    """SRC itself is unusable (missing, unreadable manifest, unknown scheme): the job cannot start."""


@dataclass(frozen=True)
class SourceConfig:
    input_format: str = "auto"            # auto: shards by extension (.tar/.tgz, .parquet), else files
    image_column: str = "image"           # the bytes column of Parquet shards
    max_bytes: int = 512 * 1024 * 1024    # objects / members larger than this are not read
    storage: StorageConfig = field(default_factory=StorageConfig)
    # Prefixes a manifest may point into ('*': anything); empty: any object-store URI (s3, gs, az,
    # ...), and local files under a local manifest's own folder. Other schemes (http, local,
    # memory, ...) only under a root that names them.
    allow_roots: tuple[str, ...] = ()


def has_shards(units: pa.Table) -> bool:
    """Whether a plan holds tar or Parquet shards (each holding an unknown number of images)."""
    return any(k in (KIND_TAR, KIND_PARQUET) for k in units.column("kind").to_pylist())


def _kind(uri: str, fmt: str) -> str:
    if fmt != "auto":
        return {"files": KIND_FILE, "tar": KIND_TAR, "parquet": KIND_PARQUET}[fmt]
    low = uri.lower()
    if low.endswith((".tar", ".tar.gz", ".tgz")):
        return KIND_TAR
    if low.endswith(".parquet"):
        return KIND_PARQUET
    return KIND_FILE


def _table(uris: list, sizes: list, cfg: SourceConfig, extras: Optional[list] = None,
           kinds: Optional[list] = None) -> pa.Table:
    return pa.Table.from_pydict({"uri": uris, "size": sizes,
                                 "kind": kinds or [_kind(u, cfg.input_format) for u in uris],
                                 "extra": extras or [None] * len(uris), "skip": [None] * len(uris)},
                                schema=PLAN_SCHEMA)


def plan_source(src: str, cfg: SourceConfig = SourceConfig(), exclude: Optional[str] = None) -> pa.Table:
    """Folder or prefix (recursive), glob pattern (quote it), or one object -> plan table, sorted.

    Names starting with "." (hidden files and folders) are skipped, and so is `exclude` (the
    job's own output) if it lies under SRC. Listing pages through prefixes of any size; entries
    go into Arrow chunks as they come, so the driver holds about a hundred bytes per key.
    """
    fs, path = filesystem(src, cfg.storage)
    fs.invalidate_cache()  # a listing cached earlier in this process may be stale
    excluded = filesystem(exclude, cfg.storage)[1].rstrip("/") if exclude else None
    plan = _PlanBuilder(fs, cfg, excluded)
    try:
        if any(ch in path for ch in "*?["):
            plan.root = path[:min(path.find(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0]
            plan.add_infos(fs.glob(path, detail=True))
        elif _is_s3(fs) and _s3_keys(fs, path, plan):
            pass  # a prefix, listed page by page (keys and sizes only)
        elif not _is_s3(fs) and fs.isdir(path):
            plan.root = path
            if is_local_fs(fs):
                _local_files(path, plan.add, plan.unlisted)
            else:
                plan.add_infos(fs.find(path, withdirs=False, detail=True))
        elif fs.exists(path):
            plan.root = path.rsplit("/", 1)[0]
            plan.add_infos({path: fs.info(path)})
        else:
            raise SourceError(f"{src}: no such file, folder or prefix")
    except (PermissionError, OSError) as e:
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"{src}: cannot list it: {redact(str(e), cfg.storage)}") from None
    except Exception as e:  # noqa: BLE001 - the client's own errors (no credentials, bad endpoint)
        if not is_client_error(e):
            raise
        raise SourceError(f"{src}: cannot list it: {explain(e, cfg.storage)}") from None
    fs.invalidate_cache()
    return plan.table()


class _PlanBuilder:
    """Collects (path, size) entries into Arrow chunks, skipping hidden and excluded paths.
    Small chunks (about one listing page): Python strings are not kept long enough to pin the
    memory of the pages parsed between them."""
    CHUNK = 1000

    def __init__(self, fs, cfg: SourceConfig, excluded: Optional[str]):
        self.fs, self.cfg, self.excluded, self.root = fs, cfg, excluded, ""
        self.paths: list[str] = []
        self.sizes: list[int] = []
        self.chunks: list[pa.Table] = []
        self.unlisted: list[str] = []  # folders under SRC that could not be listed, with why

    def add(self, p: str, size: int) -> None:
        rel = p[len(self.root):].lstrip("/") if p.startswith(self.root) else p.rsplit("/", 1)[-1]
        if any(part.startswith(".") for part in rel.split("/")):
            return
        if self.excluded and (p == self.excluded or p.startswith(self.excluded + "/")):
            return
        self.paths.append(p)
        self.sizes.append(size)
        if len(self.paths) >= self.CHUNK:
            self._flush()

    def add_infos(self, infos: dict) -> None:
        for p, info in infos.items():
            if info.get("type", "file") == "file":
                self.add(p, int(info.get("size") or 0))

    def _flush(self) -> None:
        if self.paths:
            self.chunks.append(_table([full_uri(self.fs, p) for p in self.paths], self.sizes, self.cfg))
            self.paths, self.sizes = [], []

    def table(self) -> pa.Table:
        import pyarrow.compute as pc
        self._flush()
        t = pa.concat_tables(self.chunks) if self.chunks else PLAN_SCHEMA.empty_table()
        t = t.take(pc.sort_indices(t, sort_keys=[("uri", "ascending")])).combine_chunks()
        if self.unlisted:  # the scan reports them: their files cannot have rows
            t = t.replace_schema_metadata({**(t.schema.metadata or {}), UNLISTED_KEY: json.dumps(self.unlisted)})
        return t


def unlisted_folders(plan: pa.Table) -> list[str]:
    """Folders under SRC that planning could not list ("path: reason"), as plan_source found them."""
    raw = (plan.schema.metadata or {}).get(UNLISTED_KEY.encode())
    return json.loads(raw) if raw else []


def _local_files(root: str, add, unlisted: list[str]) -> None:
    """Calls add(path, size) for every regular file under a local folder (hidden ones pruned).

    Symbolic links are followed, to folders too (archives are often assembled from links to
    other disks); a folder reached twice, e.g. through a link to its own parent, is listed once.
    A link that leads nowhere is added with size -1, so that its row says so instead of the
    file silently missing. A folder that cannot be listed goes to `unlisted` ("path: reason")."""
    seen: set[tuple[int, int]] = set()

    def refused(e: OSError) -> None:
        unlisted.append(f"{e.filename}: {e.strerror or e}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=refused, followlinks=True):
        try:
            st = os.stat(dirpath)
            if (st.st_dev, st.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
        except OSError:
            pass
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                st = os.stat(p)
            except OSError:
                if os.path.islink(p):
                    add(p, -1)  # a dangling link: reading it gives the row its error
                continue  # vanished while listing: nothing left to report on
            if stat.S_ISREG(st.st_mode):
                add(p, st.st_size)


def _is_s3(fs) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _s3_keys(fs, path: str, plan: "_PlanBuilder") -> int:
    """Adds every object under the S3 prefix `path` to the plan, listed page by page; returns
    how many objects were listed (0: not a prefix).

    Neither `fs.find` nor `fs.isdir` is used: both list the whole prefix and keep every object's
    listing record in s3fs's cache, all at once; this passes on only the key and the size,
    and caches nothing.
    """
    from fsspec.asyn import sync
    bucket, _, prefix = path.partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    root, plan.root, listed = plan.root, path.rstrip("/"), 0

    async def collect():
        nonlocal listed
        async for info in fs._iterdir(bucket, delimiter="", prefix=prefix):
            listed += 1
            name = info["name"]  # "bucket/key"
            if info.get("type") == "file" and not name.endswith("/"):
                plan.add(name, int(info["Size"]))

    sync(fs.loop, collect)
    if not listed:
        plan.root = root
    return listed


def plan_manifest(manifest: str, cfg: SourceConfig = SourceConfig()) -> pa.Table:
    """A manifest -> plan table, in the manifest's order.

    Text (one URI per line; blank lines and '#' comments skipped), CSV/TSV or Parquet with a
    column named uri (or url, path, key, file) and optional size; every other column is carried
    into the output's `extra` column as JSON. Relative entries are relative to the manifest.
    """
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    fs, path = filesystem(manifest, cfg.storage)
    low = path.lower()
    try:
        with fs.open(path, "rb") as f:
            if low.endswith(".parquet"):
                t = pq.read_table(f)
            elif low.endswith((".csv", ".tsv")):
                t = pcsv.read_csv(f, parse_options=pcsv.ParseOptions(delimiter="\t" if low.endswith(".tsv") else ","))
            else:
                lines = [ln.strip() for ln in f.read().decode("utf-8").splitlines()]
                t = pa.table({"uri": [ln for ln in lines if ln and not ln.startswith("#")]})
    except FileNotFoundError:
        raise SourceError(f"--manifest {manifest}: no such file") from None
    except (OSError, ValueError, pa.ArrowException) as e:
        raise SourceError(f"--manifest {manifest}: cannot read it: {redact(str(e), cfg.storage)}") from None
    names = {n.lower(): n for n in t.column_names}
    uri_col = next((names[c] for c in URI_COLUMNS if c in names), None)
    if uri_col is None:
        raise SourceError(f"--manifest {manifest}: no uri column (one of {', '.join(URI_COLUMNS)}); "
                          f"columns: {', '.join(t.column_names)}")
    size_col = next((names[c] for c in SIZE_COLUMNS if c in names), None)
    base = full_uri(fs, posixpath.dirname(path))
    uris = [_resolve(str(u), base) for u in t.column(uri_col).to_pylist() if u is not None]
    if len(uris) != t.num_rows:
        raise SourceError(f"--manifest {manifest}: {t.num_rows - len(uris)} empty uri cell(s)")
    sizes = [int(s) if s is not None else -1 for s in t.column(size_col).to_pylist()] if size_col \
        else [-1] * len(uris)
    rest = [c for c in t.column_names if c not in (uri_col, size_col)]
    extras = None
    if rest:
        extras = [json.dumps(r, default=str, ensure_ascii=False) for r in t.select(rest).to_pylist()]
    kinds = [_kind(u, cfg.input_format) if _allowed(u, cfg.allow_roots, base) else KIND_REFUSED for u in uris]
    return _table(uris, sizes, cfg, extras, kinds)


def _resolve(entry: str, base: str) -> str:
    if entry.lower().startswith("file://"):
        path = _file_uri_path(entry)
        return entry if path is None else os.path.normpath(path)  # another host's file: refused
    if "://" in entry or entry.startswith("/"):
        return entry if is_remote(entry) else os.path.normpath(entry)
    return posixpath.join(base, entry) if is_remote(base) else os.path.normpath(str(Path(base) / entry))


# ---- which URIs a manifest may point at --------------------------------------------------------
# By default a manifest may name objects in these object stores anywhere (the credentials decide
# what is readable), and local files under its own folder. Every other scheme (http, https,
# local, memory, ftp, sftp, hdfs, data, chains with '::', ...) only under an --allow-root that
# names it: from the workers, http:// reaches instance-metadata endpoints, local:// and memory://
# reach the node's own files and memory.
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
_SAME_STORE = {"s3a": "s3", "gcs": "gs"}  # one filesystem behind two names


def _file_uri_path(uri: str) -> Optional[str]:
    """The local path of file:///abs or file://localhost/abs; None for another host's file."""
    rest = uri[len("file://"):]
    if rest.startswith("/"):
        return rest
    host, _, path = rest.partition("/")
    return "/" + path if host.lower() == "localhost" else None


def _key(uri: str) -> tuple[Optional[tuple[str, str]], str]:
    """(scheme, location) as compared with the roots, or (None, why it can never be allowed by
    a prefix). Local paths (plain, file://, local://) are made absolute, with `..` and symbolic
    links resolved; other URIs are compared as written, so a `..` segment refuses them."""
    if "://" not in uri:
        return ("file", os.path.realpath(uri)), ""
    if "::" in uri:  # fsspec's URL chaining (zip://a.jpg::s3://b/x.zip, simplecache::https://...)
        return ("::", uri), "a chained URL ('::')"
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        path = _file_uri_path(uri)
        if path is None:
            return None, f"a file:// URI on another host ({rest.partition('/')[0]})"
        return ("file", os.path.realpath(path)), ""
    if scheme == "local":  # fsspec reads local://x relative to the worker's folder
        if not rest.startswith("/"):
            return None, "a relative local:// path"
        return ("local", os.path.realpath(rest)), ""
    if ".." in re.split(r"[/\\?#]", urllib.parse.unquote(rest)):  # %2e%2e too: HTTP servers decode it
        return None, "a '..' segment in the URI"
    return (_SAME_STORE.get(scheme, scheme), rest), ""


def _under(key: tuple[str, str], root: tuple[str, str]) -> bool:
    """Is `key` at or below `root`, compared path component by path component (s3://b/a allows
    s3://b/a/x, never s3://b/ab/x)? A root of only a scheme (https://) allows all of it."""
    if key[0] != root[0]:
        return False
    base = root[1].rstrip("/")
    if not base and root[0] not in ("file", "local"):
        return True
    return key[1] == base or key[1].startswith(base + "/")


def _allowed(uri: str, roots: tuple[str, ...], base: str) -> bool:
    """May a manifest at `base` make the workers read `uri`? With --allow-root: only under those
    roots ('*': anything). By default: objects in object storage (the credentials decide what is
    readable), and local files only under a local manifest's own folder - never /etc/shadow,
    never http:// (the cloud's metadata endpoint), local:// or memory://."""
    if "*" in roots:
        return True
    key, _ = _key(uri)
    if key is None:
        return False
    if not roots:
        if key[0] in OBJECT_STORES:
            return True
        roots = () if is_remote(base) else (base,)
    for r in roots:
        rkey, _ = _key(r)
        if rkey is not None and _under(key, rkey):
            return True
    return False


def _refusal(uri: str, roots: tuple[str, ...]) -> str:
    """The error of a manifest entry that _allowed refused: what it is, and how to allow it."""
    key, why = _key(uri)
    if key is None:
        return f"refused: the manifest points at {why}, which is never read (only --allow-root '*' allows it)"
    scheme = key[0]
    listed = f"the allowed roots ({', '.join(roots)})"
    # Roots given replace the defaults: the hint says so.
    also = " (--allow-root replaces the defaults: list every root the manifest needs)" if not roots else ""
    if scheme == "file":
        real = f" (it resolves to {key[1]})" if key[1] != os.path.normpath(uri) else ""
        where = listed if roots else "the manifest's own folder"
        return f"refused: the manifest points at a local file outside {where}{real}; " \
               f"allow its folder with --allow-root /that/folder{also}"
    if scheme == "::":
        return f"refused: the manifest points at a chained URL ('::'){' outside ' + listed if roots else ''}; " \
               "allow it with an --allow-root that starts with that chain, or '*'"
    if scheme in OBJECT_STORES:
        return f"refused: the manifest points at {scheme}:// outside {listed}; " \
               f"allow it with --allow-root {scheme}://bucket/prefix/"
    example = "local:///folder/" if scheme == "local" else f"{scheme}://host/prefix/"
    return f"refused: the manifest points at {scheme}://, which is read only under an --allow-root that names " \
           f"it ({'none of ' + listed + ' does' if roots else 'none given'}); allow it with --allow-root " \
           f"{example} or '*'{also}"


# ---- reading, inside the Ray tasks -----------------------------------------------------------

def _too_large(uri: str, size: int, max_bytes: int) -> ImageInput:
    return ImageInput(uri, None, f"object is {size:,} bytes, over the {max_bytes:,}-byte read limit "
                      "(raise --max-bytes to accept it)", STATUS_TOO_LARGE)


def read_object(uri: str, size: int, cfg: SourceConfig) -> ImageInput:
    """One object's bytes as an ImageInput; a failure becomes its read_error, never an exception."""
    try:
        fs, path = filesystem(uri, cfg.storage)
        if size < 0:
            size = retrying(lambda: fs.size(path), cfg.storage)
        if size > cfg.max_bytes:
            return _too_large(uri, size, cfg.max_bytes)
        return ImageInput(uri, retrying(lambda: fs.cat_file(path), cfg.storage))
    except FileNotFoundError as e:
        if not is_remote(uri) and os.path.islink(uri):  # local uris are plain paths
            return ImageInput(uri, None, f"cannot read object: broken symbolic link (to {os.readlink(uri)})")
        return ImageInput(uri, None, f"cannot read object: {redact(_describe(e), cfg.storage)}")
    except Exception as e:  # noqa: BLE001 - every failure of one object is that object's row
        return ImageInput(uri, None, f"cannot read object: {redact(_describe(e), cfg.storage)}")


def _describe(e: Exception) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such object"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def iter_inputs(unit: dict, cfg: SourceConfig) -> Iterator[tuple[ImageInput, Optional[str]]]:
    """All inputs of one plan row (uri, size, kind, extra), each with its extra JSON."""
    if unit["kind"] == KIND_FILE:
        yield read_object(unit["uri"], unit["size"], cfg), unit["extra"]
        return
    if unit["kind"] == KIND_REFUSED:
        yield ImageInput(unit["uri"], None, _refusal(unit["uri"], cfg.allow_roots)), unit["extra"]
        return
    reader = _tar_members if unit["kind"] == KIND_TAR else _parquet_rows
    # Members already yielded (a retry after a broken stream skips them) or done by an earlier run.
    skip = json.loads(unit.get("skip") or "[]")
    done: set = {int(m) for m in skip} if unit["kind"] == KIND_PARQUET else set(skip)
    resumed = bool(done)
    for attempt in range(max(1, cfg.storage.retries)):
        try:
            for key, item, extra in reader(unit["uri"], cfg, done):
                done.add(key)
                yield item, _merge(unit["extra"], extra)
            if not done and not resumed:  # an empty shard still gets its row, so that it cannot go unnoticed
                yield ImageInput(unit["uri"], None, f"no image members in this {unit['kind']} shard",
                                 STATUS_UNSUPPORTED), unit["extra"]
            return
        except Exception as e:  # noqa: BLE001
            last = e
            if isinstance(e, FileNotFoundError):
                break
            time.sleep(min(10.0, cfg.storage.backoff_s * 2 ** attempt))
    msg = f"{unit['kind']} shard unreadable after {len(done)} image(s): {redact(_describe(last), cfg.storage)}"
    yield ImageInput(unit["uri"], None, msg), unit["extra"]


def _merge(a: Optional[str], b: Optional[dict]) -> Optional[str]:
    if not b:
        return a
    return json.dumps({**(json.loads(a) if a else {}), **b}, default=str, ensure_ascii=False)


def _tar_members(uri: str, cfg: SourceConfig, done: set):
    fs, path = filesystem(uri, cfg.storage)
    with fs.open(path, "rb", block_size=8 * 1024 * 1024) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for m in tar:  # streaming: members in archive order, each read once
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            if not m.isfile() or name in done:
                continue
            if name.rsplit(".", 1)[-1].lower() not in IMAGE_EXTS or \
                    any(p.startswith(".") for p in name.split("/")):
                continue
            member_uri = f"{uri}#{name}"
            if m.size > cfg.max_bytes:
                yield name, _too_large(member_uri, m.size, cfg.max_bytes), None
            else:
                yield name, ImageInput(member_uri, tar.extractfile(m).read()), None


def _parquet_rows(uri: str, cfg: SourceConfig, done: set):
    import pyarrow.parquet as pq
    fs, path = filesystem(uri, cfg.storage)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if cfg.image_column not in names:
            raise ValueError(f"no column {cfg.image_column!r} (columns: {', '.join(names)}); "
                             "name the image bytes column with --image-column")
        row = 0
        for batch in pf.iter_batches(batch_size=64):
            for rec in batch.to_pylist():
                if row not in done:
                    yield row, _cell_input(f"{uri}#{row}", rec.pop(cfg.image_column), cfg), \
                        {k: v for k, v in rec.items() if not isinstance(v, (bytes, dict, list))}
                row += 1


def _cell_input(uri: str, cell, cfg: SourceConfig) -> ImageInput:
    if isinstance(cell, dict):  # Hugging Face datasets' Image feature: {"bytes": ..., "path": ...}
        cell = cell.get("bytes")
    if not isinstance(cell, (bytes, bytearray)) or not cell:
        return ImageInput(uri, None, "no image bytes in this row (empty or not a binary cell)")
    if len(cell) > cfg.max_bytes:
        return _too_large(uri, len(cell), cfg.max_bytes)
    return ImageInput(uri, bytes(cell))


def iter_bytes(uris: Iterable[str], storage: StorageConfig = StorageConfig()
               ) -> Iterator[tuple[str, Optional[bytes]]]:
    """(uri, bytes or None when unreadable) for output rows' uris - objects, tar members or
    Parquet rows - in no particular order. Each shard is streamed once, however many of its
    members are asked for."""
    cfg = SourceConfig(storage=storage)
    shards: dict[str, set] = {}
    for uri in uris:
        base, sep, _ = uri.rpartition("#")
        if sep and _kind(base, "auto") != KIND_FILE and (is_remote(uri) or not Path(uri).exists()):
            shards.setdefault(base, set()).add(uri)
            continue
        try:
            fs, path = filesystem(uri, storage)
            yield uri, fs.cat_file(path)
        except (OSError, ValueError):
            yield uri, None
    for base, wanted in shards.items():
        reader = _tar_members if _kind(base, "auto") == KIND_TAR else _parquet_rows
        try:
            for _, item, _ in reader(base, cfg, set()):
                if item.uri in wanted:
                    wanted.discard(item.uri)
                    yield item.uri, item.data
                    if not wanted:
                        break
        except Exception:  # noqa: BLE001 - a shard unreadable from here: its members stay unread
            pass
        for uri in wanted:
            yield uri, None
