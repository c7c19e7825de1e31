"""The synthetic set's ground truth, the generator families, and synth + train end to end (tiny)."""
import json

import numpy as np
import pytest
import torch

from jobs.cli import main
from zoomin_core import ImageInput, load_backend, run_chain
from zoomin_core.generators import FAMILIES
from zoomin_core.synth import (SynthConfig, _train_pool_splits, defocus_patch, make_canvas, make_sample,
                               package_photos, photo_pools)


@pytest.fixture(scope="module")
def photos():
    return list(package_photos().values())


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return FAMILIES["ae_tconv"]().eval()  # untrained is fine: it changes pixels, which is what is checked


def test_package_photos_are_available_offline():
    named = package_photos()
    assert {"astronaut", "coffee", "china"} <= set(named)
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in named.values())


def test_calib_only_photos_are_apart_and_overall_split_shares_hold():
    named = package_photos()
    holdout, calib = photo_pools(named, SynthConfig())
    assert set(holdout) == {"coffee", "coins", "flower"} and set(calib) == {"chelsea", "camera", "rocket"}
    # a user's folder: every seventh photo each, disjoint; too few photos: no calib-only pool
    folder = {f"p{i:02d}.jpg": None for i in range(21)}
    holdout, calib = photo_pools(folder, SynthConfig())
    assert len(holdout) == 3 and len(calib) == 3 and not set(holdout) & set(calib)
    assert photo_pools({f"p{i}": None for i in range(8)}, SynthConfig())[1] == {}
    assert len(photo_pools({f"p{i}": None for i in range(9)}, SynthConfig())[1]) == 1
    assert photo_pools(named, SynthConfig(calib_share=0))[1] == {}
    with pytest.raises(ValueError, match="leave some images"):
        SynthConfig(calib_share=0.9)
    assert main(["synth", "--out", "unused", "--defocus", "1.5"]) == 2  # refused before any work
    # the training photos' shares plus the calib-only photos' (calib/test only) give cfg.splits
    cfg = SynthConfig(calib_share=0.2, holdout_share=0.1, splits=(("train", 0.5), ("calib", 0.3), ("test", 0.2)))
    c = cfg.calib_share / (1 - cfg.holdout_share)
    pool = dict(_train_pool_splits(cfg))
    assert sum(pool.values()) == pytest.approx(1)
    assert (1 - c) * pool["train"] == pytest.approx(0.5)
    assert (1 - c) * pool["calib"] + c * 0.3 / 0.5 == pytest.approx(0.3)
    assert (1 - c) * pool["test"] + c * 0.2 / 0.5 == pytest.approx(0.2)


def test_defocus_patch_softens_part_of_the_photo_and_keeps_it_grey(photos):
    rng = np.random.default_rng(2)
    colour = next(a for a in photos if not np.array_equal(a[..., 0], a[..., 1]))
    grey = next(a for a in photos if np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))
    for a in (np.ascontiguousarray(colour[:300, :400]), np.ascontiguousarray(grey[:300, :400])):
        for _ in range(3):
            out = defocus_patch(a, rng)
            assert out.shape == a.shape and out.dtype == np.uint8
            changed = np.any(out != a, axis=2).mean()
            assert 0.05 < changed < 0.9  # a part, not all and not nothing
    g = defocus_patch(np.ascontiguousarray(grey[:300, :400]), rng)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])


def test_canvas_is_large_and_made_of_native_photo_pixels(photos):
    cfg = SynthConfig()
    rng = np.random.default_rng(3)
    for _ in range(5):
        c = make_canvas(photos, rng, cfg)
        assert 680 <= max(c.shape[:2]) <= 2048 and c.dtype == np.uint8
    # a single tile is an exact (possibly mirrored) crop of one photo: never resampled
    c = make_canvas(photos, np.random.default_rng(4), SynthConfig(grids=((1, 1),)))
    h, w = c.shape[:2]
    found = False
    for a in photos:
        if a.shape[0] < h or a.shape[1] < w:
            continue
        for tile in (c, c[:, ::-1]):
            hits = np.argwhere(np.all(a[: a.shape[0] - h + 1, : a.shape[1] - w + 1] == tile[0, 0], axis=-1))
            found |= any(np.array_equal(a[y:y + h, x:x + w], tile) for y, x in hits[:200])
    assert found


def test_regional_fake_changes_only_inside_its_boxes(photos, generator):
    cfg = SynthConfig()
    rng = np.random.default_rng(5)
    canvas = make_canvas(photos, rng, cfg)
    out, boxes = make_sample(canvas, "regional", generator, rng, cfg)
    h, w = canvas.shape[:2]
    assert out.shape == canvas.shape and 1 <= len(boxes) <= 3
    inside = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        area = (x2 - x1) * (y2 - y1) / (h * w)
        assert cfg.region_area[0] * 0.5 <= area <= cfg.region_area[1] * 1.5  # small: a few percent
        inside[y1:y2, x1:x2] = True
        assert np.abs(out[y1:y2, x1:x2].astype(int) - canvas[y1:y2, x1:x2]).mean() > 1.0
    assert np.array_equal(out[~inside], canvas[~inside])


def test_real_sample_is_untouched_and_whole_fake_covers_everything(photos, generator):
    cfg = SynthConfig()
    canvas = make_canvas(photos, np.random.default_rng(9), cfg)
    real, no_boxes = make_sample(canvas, "real", generator, np.random.default_rng(9), cfg)
    assert real is canvas and no_boxes == []
    whole, boxes = make_sample(canvas, "whole", generator, np.random.default_rng(9), cfg)
    assert boxes == [[0, 0, canvas.shape[1], canvas.shape[0]]]
    assert np.abs(whole.astype(int) - canvas).mean() > 1.0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_families_regenerate_in_tiles_like_in_one_piece(family):
    torch.manual_seed(1)
    gen = FAMILIES[family]().eval()
    pixels = np.random.default_rng(0).integers(0, 255, (150, 190, 3)).astype(np.uint8)
    tiled = gen.regenerate(pixels, tile=96, overlap=16).astype(int)
    whole = gen.regenerate(pixels, tile=4096).astype(int)
    assert tiled.shape == pixels.shape
    if family != "denoise":  # denoise draws its noise per tile
        assert np.abs(tiled - whole).mean() < 1.0


def test_restoration_families_have_no_upsampling_and_others_do():
    def upsamples(net):
        return any(isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Upsample, torch.nn.PixelShuffle))
                   for m in net.modules())
    for family in ("denoise", "deblur"):
        assert not upsamples(FAMILIES[family]())
        assert not any(getattr(m, "stride", (1, 1)) != (1, 1) for m in FAMILIES[family]().modules())
    assert all(upsamples(FAMILIES[f]()) for f in ("ae_tconv", "ae_resize", "sr_shuffle"))
    # The super-resolution families see only the 2x-reduced image: detail that leaves every 2x2
    # block's mean unchanged cannot change their output.
    x = torch.rand(1, 3, 32, 32) * 0.5 + 0.25
    wiggle = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(16, 16) * 0.1
    for family in ("sr_shuffle", "sr_interp"):
        net = FAMILIES[family]().eval()
        with torch.no_grad():
            assert torch.allclose(net(x), net(x + wiggle), atol=1e-6)
            assert not torch.allclose(net(x), net(x.roll(1, dims=3)), atol=1e-3)


def test_deblur_family_blurs_each_image_by_its_own_sigma():
    from zoomin_core.generators import _gaussian_blur
    x = torch.zeros(2, 3, 21, 21)
    x[:, :, 10, 10] = 1.0
    y = _gaussian_blur(x, torch.tensor([0.8, 1.6]))
    assert torch.allclose(y.sum(dim=(2, 3)), torch.ones(2, 3), atol=1e-5)   # mass kept
    assert y[0, 0, 10, 10] > y[1, 0, 10, 10] > 0                             # wider for the larger sigma
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(_gaussian_blur(flat, torch.tensor([1.2])), flat, atol=1e-6)
    gen = FAMILIES["deblur"]()
    assert not torch.allclose(gen.generation_input(x[:1]), x[:1])


@pytest.mark.slow
def test_synth_then_train_then_scan(tmp_path, caplog):
    data = tmp_path / "synth"
    assert main(["synth", "--out", str(data), "--count", "30", "--generator-steps", "20"]) == 0
    records = [json.loads(line) for line in (data / "labels.jsonl").read_text().splitlines()]
    assert len(records) == 30 and {r["kind"] for r in records} == {"real", "whole", "regional"}
    assert {r["source"] for r in records} - {"real"} <= set(FAMILIES)
    assert all((data / r["file"]).read_bytes()[:2] == b"\xff\xd8" for r in records)  # one encoding: JPEG
    # photos kept from training: holdout ones only in "holdout", calib-only ones never in "train"
    assert all((r["split"] == "holdout") == (r["photos"] == "holdout") for r in records)
    assert all(r["split"] in ("calib", "test") for r in records if r["photos"] == "calib")
    weights = tmp_path / "w.safetensors"
    assert main(["train", str(data / "labels.jsonl"), "--out", str(weights), "--version", "t1",
                 "--scan-steps", "3", "--zoom-steps", "3", "--exclude-source", "denoise"]) == 0
    # a 30-image set calibrates on a handful: said, not silently accepted
    assert any("scores calibrated on so few are unreliable" in r.getMessage() for r in caplog.records)
    backend = load_backend("compact", str(weights))
    assert backend.model_id == "compact/t1"
    assert backend.model.meta["scan_calibration"] and backend.model.meta["zoom_calibration"]
    assert 0 <= backend.model.meta["zoom_weight"] <= 1
    assert "denoise" not in backend.model.meta["train_sources"]
    rows = run_chain(backend, [ImageInput(r["file"], (data / r["file"]).read_bytes()) for r in records[:3]])
    assert all(r.status == "ok" and 0 <= r.score <= 1 for r in rows)
