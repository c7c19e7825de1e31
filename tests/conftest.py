import io
import os
import shutil
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.s3_support import TEST_KEY, TEST_SECRET, make_bucket, moto_server, s3_client

# Token authentication is on by default in Ray 2.60; the test cluster is local and private.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# The standard AWS chain of the test process - and of the Ray workers it starts, which inherit
# this environment. No instance-metadata lookups (they wait for a timeout off EC2).
os.environ.update(AWS_ACCESS_KEY_ID=TEST_KEY, AWS_SECRET_ACCESS_KEY=TEST_SECRET,
                  AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_var, None)


def textured(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB image: smooth gradients plus fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (w + h) * 200], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR (with a correct CRC) claims width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    struct.pack_into(">II", data, ihdr + 8, width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4: ihdr + 8 + 13])) & 0xFFFFFFFF
    struct.pack_into(">I", data, ihdr + 8 + 13, crc)
    return bytes(data)


# name -> (expected status, whether width/height are known)
BAD_INPUTS = {
    "empty.jpg": "decode_error",
    "truncated.jpg": "decode_error",
    "notes.jpg": "decode_error",
    "one_pixel.png": "unsupported",
    "bomb.png": "too_large",
    "cmyk.jpg": "ok",
    "deep16.png": "ok",
    "palette_alpha.png": "ok",
    "animated.gif": "ok",
    "rotated.jpg": "ok",
    "noext": "ok",
}


def write_bad_inputs(folder: Path) -> dict[str, str]:
    """The foundation's bad-input kinds, mixed. Returns file name -> expected status."""
    folder.mkdir(parents=True, exist_ok=True)
    good = textured(160, 120, seed=1)
    (folder / "empty.jpg").write_bytes(b"")
    full = jpeg_bytes(good)
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "notes.jpg").write_text("this is not an image, just text named .jpg\n")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(folder / "one_pixel.png")
    (folder / "bomb.png").write_bytes(png_claiming(30000, 30000))
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg", format="JPEG")
    deep = (textured(96, 80, seed=2)[..., 0].astype(np.uint16) * 257)
    Image.fromarray(deep).save(folder / "deep16.png")
    pal = Image.fromarray(textured(96, 96, seed=3)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(folder / "palette_alpha.png", transparency=0)
    # Frames of clearly different brightness, so a test can tell which one was decoded.
    frames = [Image.fromarray((textured(80, 64, seed=s) * f).astype(np.uint8))
              for s, f in ((0, 0.3), (1, 1.0), (2, 0.6))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(textured(200, 100, seed=4)).save(folder / "rotated.jpg", exif=exif, quality=90)
    (folder / "noext").write_bytes(jpeg_bytes(textured(128, 96, seed=5)))  # content, not extension
    return dict(BAD_INPUTS)


@pytest.fixture
def bad_inputs(tmp_path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "mixed"
    return folder, write_bad_inputs(folder)


def kill_cluster(temp: str) -> None:
    """Stop only the processes of the cluster whose Ray temp dir is `temp` (`ray stop` would stop
    every cluster on the machine), then remove that dir."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp in cmd and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray cluster (2 CPUs, like CI) for the whole session."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


class S3:
    """The loopback S3 server of the session: its endpoint and a boto3 client."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.client = s3_client(endpoint)
        self._n = 0

    def bucket(self, prefix: str = "b") -> str:
        """A new, empty bucket (names are unique within the session)."""
        self._n += 1
        name = f"{prefix}-{self._n:03d}"
        make_bucket(self.client, name)
        return name

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"


@pytest.fixture(scope="session")
def s3():
    """moto's standalone S3 server as its own process on loopback, for the whole session."""
    with moto_server() as endpoint:
        yield S3(endpoint)
