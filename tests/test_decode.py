import io

import numpy as np
import pytest
from PIL import Image

from conftest import BAD_INPUTS, jpeg_bytes, textured, write_bad_inputs
from zoomin_core.decode import DecodeConfig, decode_full, prepare
from zoomin_core.records import ImageInput


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    write_bad_inputs(folder)
    return {p.name: prepare(ImageInput(str(p), p.read_bytes())) for p in folder.iterdir()}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_each_kind_gets_the_expected_status(decoded, name):
    p = decoded[name]
    assert p.status == BAD_INPUTS[name], (name, p.error)
    if p.status == "ok":
        assert p.error is None
        assert p.view.pixels.dtype == np.uint8 and p.view.pixels.shape[2] == 3
    else:
        assert p.error and len(p.error) > 10  # a message a person can act on
        assert p.view is None


def test_error_messages_say_what_happened(decoded):
    assert "empty" in decoded["empty.jpg"].error
    assert "truncated" in decoded["truncated.jpg"].error
    assert "not a recognised image" in decoded["notes.jpg"].error
    # Pillow's own guard catches this one (over twice our limit); the message still names ours
    assert "900,000,000 pixels exceeds the limit of 100,000,000" in decoded["bomb.png"].error
    assert "--max-pixels" in decoded["bomb.png"].error
    assert "1x1" in decoded["one_pixel.png"].error


def test_exif_orientation_is_applied(decoded):
    p = decoded["rotated.jpg"]  # stored 200x100 with orientation 6: displayed 100x200
    assert (p.width, p.height) == (100, 200)
    assert p.view.pixels.shape[:2] == (200, 100)


def test_modes_become_rgb_with_sane_values(decoded):
    deep = decoded["deep16.png"].view.pixels
    assert deep.max() > 100  # 16-bit rescaled, not truncated to the low byte
    assert np.array_equal(deep[..., 0], deep[..., 1])  # grey stays grey
    pal = decoded["palette_alpha.png"].view.pixels
    assert pal.shape[2] == 3
    gif = decoded["animated.gif"].view.pixels  # the first (dark) frame, not a later one
    assert gif.shape[:2] == (64, 80)
    assert gif.mean() < 0.3 * 255 * 0.6


def test_pixel_limit_is_configurable():
    data = jpeg_bytes(textured(300, 200))
    small = prepare(ImageInput("a", data), DecodeConfig(max_pixels=50_000))
    assert small.status == "too_large" and "exceeds the limit of 50,000" in small.error
    assert prepare(ImageInput("a", data), DecodeConfig(max_pixels=60_000)).status == "ok"


def test_jpeg_view_uses_draft_mode_and_maps_to_original():
    data = jpeg_bytes(textured(2048, 1536))
    p = prepare(ImageInput("big.jpg", data), DecodeConfig(view_max_side=512))
    assert p.view.pixels.shape == (384, 512, 3)
    assert (p.width, p.height) == (2048, 1536)
    assert p.view.scale_x == pytest.approx(4.0) and p.view.scale_y == pytest.approx(4.0)
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (512, 384))
    assert im.size == (512, 384)  # libjpeg DCT scaling 1/4 really happens for this size


def test_draft_view_close_to_full_decode_view():
    data = jpeg_bytes(textured(1600, 1200, seed=7))
    a = prepare(ImageInput("x", data), DecodeConfig(draft=True)).view.pixels.astype(float)
    b = prepare(ImageInput("x", data), DecodeConfig(draft=False)).view.pixels.astype(float)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 6.0


def test_full_decode_is_original_size():
    data = jpeg_bytes(textured(640, 480))
    assert decode_full(data).shape == (480, 640, 3)


def test_read_failure_keeps_its_status():
    p = prepare(ImageInput("gone.jpg", None, "cannot read file: No such file", "read_error"))
    assert p.status == "read_error" and "No such file" in p.error
    assert p.image_id.startswith("uri:")


def test_heic_without_its_plugin_is_named_not_called_garbage():
    # the first box of an iPhone photo: size, "ftyp", major brand "heic", compatible brands
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    p = prepare(ImageInput("IMG_0001.HEIC", data))
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        assert p.status == "unsupported" and "HEIC/HEIF" in p.error and "pillow-heif" in p.error
    else:  # with the plugin, these bytes are a damaged HEIF file, not an unknown format
        assert p.status == "decode_error" and "HEIC/HEIF" in p.error and "damaged" in p.error
