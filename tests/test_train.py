"""`zoomin train`'s fitting: the scan's training crops and targets, and where the nets learn."""
import numpy as np
import pytest
import torch

from zoomin_core.compact_model import SCAN_STRIDE
from zoomin_core.train import Sample, TrainConfig, _view_crop, train


def sample(rng, label=0, boxes=(), size=(384, 512), view_scale=2, split="train"):
    h, w = size
    full = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    kind = "real" if not label else "regional" if boxes else "whole"
    return Sample(f"{kind}.jpg", label, kind, "fam" if label else "real", split, [list(b) for b in boxes], b"",
                  np.ascontiguousarray(full[::view_scale, ::view_scale]), w, h, full)


def reference_crop(s, size, y, x):
    """The crop and cell targets cut from the whole view and whole mask, padded at the edge."""
    vh, vw = s.view.shape[:2]
    m = np.zeros((vh, vw), np.float32)
    sx, sy = vw / s.width, vh / s.height
    for x1, y1, x2, y2 in s.regions():
        m[int(y1 * sy):int(np.ceil(y2 * sy)), int(x1 * sx):int(np.ceil(x2 * sx))] = 1.0
    ph, pw = max(0, size - vh), max(0, size - vw)
    view = np.pad(s.view, ((0, ph), (0, pw), (0, 0)), mode="edge")
    m = np.pad(m, ((0, ph), (0, pw)), mode="edge")
    cells = m[y:y + size, x:x + size].reshape(size // SCAN_STRIDE, SCAN_STRIDE, size // SCAN_STRIDE,
                                                SCAN_STRIDE).mean(axis=(1, 3))
    return view[y:y + size, x:x + size], cells


@pytest.mark.parametrize("size,boxes", [((384, 512), [(10, 20, 90, 75), (300, 200, 512, 384)]),  # one at the edge
                                        ((384, 512), []),
                                        ((150, 200), [(40, 30, 130, 101)])])  # view smaller than the crop
@pytest.mark.parametrize("label", [0, 1])
def test_scan_crops_and_targets_are_the_window_of_the_whole_view(size, boxes, label):
    rng = np.random.default_rng(1)
    s = sample(rng, label, boxes if label else (), size)
    hits = 0
    for seed in range(40):
        draw = np.random.default_rng(seed)
        crop, cells = _view_crop(s, 128, draw)
        # find where the crop was cut (positions are multiples of the stride)
        vh, vw = s.view.shape[:2]
        H, W = max(vh, 128), max(vw, 128)
        spots = [(y, x) for y in range(0, H - 127, SCAN_STRIDE) for x in range(0, W - 127, SCAN_STRIDE)
                 if np.array_equal(reference_crop(s, 128, y, x)[0], crop)]
        assert spots, "the crop is no window of the (edge-padded) view"
        ref_cells = reference_crop(s, 128, *spots[0])[1]
        np.testing.assert_array_equal(cells, ref_cells)
        hits += cells.any()
    if label:
        assert hits > 0  # the generated area shows up in the targets
    else:
        assert hits == 0


def test_nets_learn_on_the_device_asked_and_come_back_on_the_cpu():
    rng = np.random.default_rng(0)
    samples = [sample(rng) for _ in range(3)] + [sample(rng, 1, [(32, 32, 160, 160)]) for _ in range(3)]
    samples += [sample(rng, 1) for _ in range(2)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    # 10 steps once made torch's one-cycle schedule divide by zero; 2 steps have none
    cfg = TrainConfig(scan_steps=10, zoom_steps=2, batch=8)
    for device in devices:
        model = train(samples, cfg, device=device)
        for net in (model.scan, model.zoom):
            assert {p.device.type for p in net.parameters()} == {"cpu"}
        timing = model.meta["train_timing"]
        assert (timing["scan"]["steps"], timing["zoom"]["steps"]) == (10, 2)
        assert 0 <= timing["scan"]["batch_seconds"] <= timing["scan"]["seconds"]
        expect = "cpu" if device == "cpu" else torch.cuda.get_device_name(0)
        assert model.meta["train_device"] == expect
        assert all(torch.isfinite(p).all() for p in model.scan.parameters())
