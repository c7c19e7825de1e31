"""The compact model's input residual and its weights file."""
import pytest
import torch

from zoomin_core.compact_model import CompactModel, HighPass


def test_residual_scales_with_the_grain_and_drops_a_flat_level():
    g = torch.Generator().manual_seed(0)
    grain = torch.randn(1, 3, 64, 64, generator=g)
    hp = HighPass()
    ratio = hp(0.5 + 0.08 * grain).pow(2).mean().sqrt() / hp(0.5 + 0.02 * grain).pow(2).mean().sqrt()
    assert ratio == pytest.approx(4.0, rel=1e-3)
    assert hp(torch.full((1, 3, 32, 32), 0.4)).abs().max() < 1e-6


def test_weights_round_trip_and_experiment_weights_are_refused(tmp_path):
    torch.manual_seed(0)
    model = CompactModel.new({"version": "t"})
    model.scan.eval()
    model.zoom.eval()
    path = tmp_path / "w.safetensors"
    model.save(path)
    loaded = CompactModel.load(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded.zoom(x), model.zoom(x)) and torch.equal(loaded.scan(x), model.scan(x))
    assert loaded.version == "t"
    # weights of an experiment that did not ship say so, not a shape error
    with pytest.raises(ValueError, match="'local' input residual"):
        CompactModel.new({"residual": "local"})
