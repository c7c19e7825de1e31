"""Storage: the one place that turns a URI into (filesystem, path) for every reader and writer.

Local paths and any fsspec URL (`s3://`, `gs://` with gcsfs installed, ...). Credentials come
from the provider's standard chain (for S3: environment, ~/.aws config files, instance roles);
a `StorageConfig` built from flags or a JSON file overrides endpoint, region, profile and keys,
for S3-compatible stores (MinIO, Ceph, a private endpoint). The config travels to the Ray
workers inside the job's config; its secrets are kept out of its repr, and `redact` scrubs them
out of any message before it reaches a log or an output row.

Transient faults (throttling, 5xx, dropped connections, a body cut short) are retried twice
over: botocore retries each request (its "standard" mode), and `retrying` retries a whole
object read, with exponential back-off and jitter, because a GET whose body is cut off midway
is not retried by the client.
"""
from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


class StorageError(Exception):
    """A URI that cannot be reached at all (unknown scheme, missing filesystem package)."""


@dataclass(frozen=True)
class StorageConfig:
    endpoint_url: Optional[str] = None     # S3-compatible endpoint, e.g. http://minio:9000
    region: Optional[str] = None
    profile: Optional[str] = None          # a profile of ~/.aws/config
    anon: bool = False                     # unsigned requests (public buckets)
    key: Optional[str] = field(default=None, repr=False)
    secret: Optional[str] = field(default=None, repr=False)
    token: Optional[str] = field(default=None, repr=False)
    retries: int = 8                       # attempts per request and per object read
    backoff_s: float = 0.25                # first pause between attempts; doubles up to 10 s

    @staticmethod
    def from_file(path: str, **overrides) -> "StorageConfig":
        """JSON object with any of the field names; flags (non-None overrides) win over the file."""
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise StorageError(f"--storage-config {path}: cannot read it as JSON: {e}") from None
        known = {f.name for f in fields(StorageConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StorageError(f"--storage-config {path}: unknown keys {unknown}; known: {sorted(known)}")
        cfg = StorageConfig(**data)
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    def secrets(self) -> list[str]:
        env = [os.environ.get(k) for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                            "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS")]
        return [s for s in (self.key, self.secret, self.token, *env) if s and len(s) >= 4]


_SECRET_PATTERNS = [
    re.compile(r"(?i)((?:aws_)?(?:secret_access_key|secret|session_token|token|password|signature)"
               r"\s*[=:]\s*)([^\s&,;'\"]+)"),
    re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)([^&\s]+)"),
    re.compile(r"(://)([^/@\s:]+:[^/@\s]+)(@)"),      # user:password@host in a URL
]


def redact(text: str, cfg: Optional[StorageConfig] = None) -> str:
    """`text` with known secret values and secret-looking assignments replaced by ***."""
    for s in (cfg or StorageConfig()).secrets():
        text = text.replace(s, "***")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: m.group(1) + "***" + (m.group(3) if m.lastindex == 3 else ""), text)
    return text


# Errors raised by object-store clients themselves (botocore's NoCredentialsError, google-auth's
# DefaultCredentialsError, ...) rather than fsspec's OSError translations: a user's set-up, not a bug.
_CLIENT_MODULES = ("botocore", "aiobotocore", "google", "gcsfs", "s3fs")
_CREDENTIAL_HINT = ("no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, "
                    "--profile), give --storage-config FILE, or pass --anon for a public bucket")
_GCS_CREDENTIAL_HINT = ("no credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key "
                        "file, or pass --anon for a public bucket")


def is_client_error(e: BaseException) -> bool:
    return (type(e).__module__ or "").split(".")[0] in _CLIENT_MODULES


def explain(e: BaseException, cfg: Optional[StorageConfig] = None) -> str:
    """A storage failure in words a user can act on, secrets removed."""
    name = type(e).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return f"{name}: {_CREDENTIAL_HINT}"
    if name == "DefaultCredentialsError":  # google-auth, under gcsfs
        return f"{name}: {_GCS_CREDENTIAL_HINT}"
    return f"{name}: {redact(str(e), cfg)}"


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def protocol(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if is_remote(uri) else "file"


def _s3_options(cfg: StorageConfig) -> dict:
    opts: dict = {
        "anon": cfg.anon,
        # botocore retries each request on throttling, 5xx and connection errors.
        "config_kwargs": {"retries": {"max_attempts": cfg.retries, "mode": "standard"},
                          "connect_timeout": 10, "read_timeout": 60},
    }
    if cfg.endpoint_url:
        opts["endpoint_url"] = cfg.endpoint_url
    if cfg.region:
        opts["client_kwargs"] = {"region_name": cfg.region}
    if cfg.profile:
        opts["profile"] = cfg.profile
    if cfg.key:
        opts.update(key=cfg.key, secret=cfg.secret, token=cfg.token)
    return opts


_FS_CACHE: dict = {}


def filesystem(uri: str, cfg: Optional[StorageConfig] = None):
    """(fsspec filesystem, path inside it) for `uri`. One filesystem per process and config."""
    import fsspec
    cfg = cfg or StorageConfig()
    proto = protocol(uri)
    if proto == "file":
        return fsspec.filesystem("file"), os.path.abspath(uri.removeprefix("file://"))
    if proto in ("s3", "s3a"):
        proto = "s3"
    cache_key = (proto, cfg)
    if cache_key not in _FS_CACHE:
        try:
            _FS_CACHE[cache_key] = fsspec.filesystem(proto, **(_s3_options(cfg) if proto == "s3" else {}))
        except ImportError as e:
            pkg = {"s3": "s3fs (pip install 'zoomin[s3]')", "gs": "gcsfs", "gcs": "gcsfs",
                   "az": "adlfs", "abfs": "adlfs"}.get(proto, f"the fsspec package for {proto}://")
            raise StorageError(f"{uri}: reading {proto}:// needs {pkg}: {e}") from None
        except ValueError as e:
            raise StorageError(f"{uri}: unknown storage scheme {proto!r}: {e}") from None
    fs = _FS_CACHE[cache_key]
    return fs, fs._strip_protocol(uri.replace("s3a://", "s3://", 1))


def full_uri(fs, path: str) -> str:
    """The URI of `path` in `fs`, as written to output rows: s3://bucket/key or an absolute path."""
    if is_local_fs(fs):
        return path
    return fs.unstrip_protocol(path)


def is_local_fs(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


# Errors that no retry will fix: a missing object, a refused permission, a path that is a folder.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def retrying(fn: Callable[[], T], cfg: Optional[StorageConfig] = None,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """fn(), retried on transient errors with exponential back-off and jitter; the last error is raised."""
    cfg = cfg or StorageConfig()
    attempts = max(1, cfg.retries)
    for attempt in range(attempts):
        try:
            return fn()
        except _PERMANENT:
            raise
        except Exception:
            if attempt == attempts - 1:
                raise
            pause = min(10.0, cfg.backoff_s * 2 ** attempt)
            sleep(pause * (0.5 + random.random()))
    raise AssertionError("unreachable")
