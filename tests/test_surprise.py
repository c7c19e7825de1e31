"""The real-photo second opinion (zoomin_core/surprise.py): blind to the pixel it predicts, one
scale with the zoom, used by the backend only once fitted, kept in the weights file."""
import numpy as np
import pytest
import torch

from zoomin_core import surprise
from zoomin_core.backends.compact import CompactBackend
from zoomin_core.compact_model import CompactModel
from zoomin_core.records import Box, Crop


def test_blind_spot_reads_the_neighbours_never_the_pixel_itself():
    torch.manual_seed(0)
    net = surprise.BlindSpot().eval()
    x = torch.rand(1, 3, 32, 32)
    moved_centre, moved_neighbour = x.clone(), x.clone()
    moved_centre[..., 16, 16] = 1 - x[..., 16, 16]
    moved_neighbour[..., 18, 15] = 1 - x[..., 18, 15]
    with torch.no_grad():
        base, centre, neighbour = (net.context(v) for v in (x, moved_centre, moved_neighbour))
    for a, b in zip(base, centre):  # offset and scale at (16, 16) ignore the pixel at (16, 16)
        assert torch.equal(a[..., 16, 16], b[..., 16, 16])
        assert not torch.equal(a[..., 16, 17], b[..., 16, 17])  # but its neighbours read it
    assert not torch.equal(base[1][..., 16, 16], neighbour[1][..., 16, 16])


def test_crop_statistics_have_one_row_of_the_named_statistics_per_window():
    net = surprise.BlindSpot().eval()
    with torch.no_grad():
        stats = surprise.crop_stats(net, torch.rand(3, 3, 40, 56))
    assert stats.shape == (3, len(surprise.STATS)) and np.isfinite(stats).all()
    assert np.allclose(stats[:, 2], np.abs(stats[:, 1]))  # abs_surprise is |surprise|
    assert (stats[:, 4] <= stats[:, 5]).all()  # block_min <= block_max


def test_the_larger_opinion_counts_both_on_the_real_crops_scale():
    head = {"real_z": [1.0, 2.0]}
    zoom = np.array([5.0, 5.0, -3.0])
    assert surprise.combine(zoom, np.array([1.0, 3.0, -1.0]), head).tolist() == [2.0, 3.0, -1.0]
    assert surprise.combine(zoom, None, head).tolist() == [2.0, 2.0, -2.0]


def _model_with_head(bias: float) -> CompactModel:
    torch.manual_seed(0)
    model = CompactModel.new({"version": "t"})
    model.scan.eval()
    model.zoom.eval()
    model.surprise = surprise.BlindSpot().eval()
    n = len(surprise.STATS)
    # a head that ignores the statistics and says `bias` standard deviations above real crops
    model.meta["surprise"] = {"mean": [0.0] * n, "std": [1.0] * n, "weights": [0.0] * n + [bias],
                              "real_s": [0.0, 1.0], "real_z": [0.0, 1.0]}
    return model


def _crops(sides):
    rng = np.random.default_rng(0)
    return [Crop(Box(0, 0, s, s, 0.5), rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in sides]


def test_backend_takes_the_fitted_opinion_and_keeps_the_zoom_where_a_window_is_too_small():
    crops = _crops([64, 40, surprise.MIN_SIDE - 4])
    same = _model_with_head(0.0)  # the same scan and zoom nets, without the real-photo model
    zoom_only = CompactBackend(model=CompactModel(same.scan, same.zoom, {"version": "t"})).crop_scores(crops)
    loud = CompactBackend(model=_model_with_head(12.0)).crop_scores(crops)
    quiet = CompactBackend(model=_model_with_head(-50.0)).crop_scores(crops)
    assert loud[0] > 0.999 and loud[1] > 0.999  # the opinion is larger: it decides
    assert loud[2] == pytest.approx(zoom_only[2], abs=1e-6)  # too small for it: the zoom's score
    # a silent opinion leaves the zoom's own score (its real-crop scale here is mean 0, sd 1)
    assert quiet == pytest.approx(zoom_only, abs=1e-6)


def test_an_unfitted_real_photo_model_is_not_used():
    model = _model_with_head(12.0)
    del model.meta["surprise"]
    crops = _crops([64])
    zoom_only = CompactBackend(model=CompactModel(model.scan, model.zoom, {"version": "t"})).crop_scores(crops)
    assert CompactBackend(model=model).crop_scores(crops) == zoom_only


def test_weights_file_keeps_the_real_photo_model_and_its_head(tmp_path):
    model = _model_with_head(0.7)
    with torch.no_grad():  # a model that differs from a fresh one
        for p in model.surprise.parameters():
            p.add_(0.01)
    model.save(tmp_path / "w.safetensors")
    back = CompactModel.load(tmp_path / "w.safetensors")
    assert back.meta["surprise"] == model.meta["surprise"]
    crops = _crops([96, 48])
    assert CompactBackend(model=back).crop_scores(crops) == CompactBackend(model=model).crop_scores(crops)
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(back.surprise(x)[0], model.surprise(x)[0])


def test_region_windows_sit_inside_true_regions_and_anywhere_in_real_images():
    import io

    from PIL import Image

    from zoomin_core.train import Sample

    def sample(label, boxes, w=400, h=300):
        a = np.zeros((h, w, 3), np.uint8)
        a[..., 0] = 220  # red everywhere, blue inside the boxes
        for x1, y1, x2, y2 in boxes:
            a[y1:y2, x1:x2] = (0, 0, 220)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return Sample("f.png", label, "regional" if boxes else "real", "x", "test", boxes, buf.getvalue(),
                      a, w, h)

    fake = sample(1, [[40, 30, 140, 90], [300, 200, 380, 290]])
    real = sample(0, [])
    wins = surprise.region_windows([fake, real], size=64)
    assert [s.label for s, _ in wins] == [1, 1, 0, 0]
    assert wins[0][1].shape == (60, 64, 3) and wins[1][1].shape == (64, 64, 3)  # at most 64 a side
    for _, win in wins[:2]:
        assert (win[..., 2] == 220).all() and (win[..., 0] == 0).all()  # only the region's pixels
    for _, win in wins[2:]:
        assert win.shape == (64, 64, 3) and (win[..., 0] == 220).all()
