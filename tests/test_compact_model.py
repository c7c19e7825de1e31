"""The compact model's input residual and what its weights file records about it."""
import pytest
import torch

from zoomin_core.compact_model import HighPass, CompactModel


def _noise(amplitude: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 + amplitude * torch.randn(1, 3, 64, 64, generator=g)


def test_local_residual_keeps_the_grain_and_drops_its_level():
    plain, local = HighPass(), HighPass(local=True)
    weak, strong = _noise(0.02), _noise(0.08)  # the same grain at 4x the amplitude
    ratio = plain(strong).pow(2).mean().sqrt() / plain(weak).pow(2).mean().sqrt()
    assert ratio == pytest.approx(4.0, rel=1e-3)
    # normalised: the same pattern, about the same values, wherever the grain is above the floor
    assert torch.allclose(local(strong), local(weak), rtol=0.05, atol=0.02)
    assert local(weak).pow(2).mean().sqrt() == pytest.approx(1.0, abs=0.05)


def test_local_residual_does_not_amplify_a_flat_area():
    local = HighPass(local=True)
    assert local(torch.full((1, 3, 32, 32), 0.4)).abs().max() < 1e-3
    # one grey level of JPEG-like jitter stays below the unit level of real grain
    tiny = 0.4 + torch.randint(0, 2, (1, 3, 32, 32), generator=torch.Generator().manual_seed(1)) / 255
    assert local(tiny).pow(2).mean().sqrt() < 0.8


def test_weights_remember_the_residual_and_refuse_an_unknown_one(tmp_path):
    torch.manual_seed(0)
    model = CompactModel.new({"version": "t", "residual": "local"})
    model.scan.eval()
    model.zoom.eval()
    path = tmp_path / "w.safetensors"
    model.save(path)
    loaded = CompactModel.load(path)
    x = torch.rand(1, 3, 64, 64)
    assert loaded.scan.hp.local and loaded.zoom.hp.local
    with torch.inference_mode():
        assert torch.equal(loaded.zoom(x), model.zoom(x)) and torch.equal(loaded.scan(x), model.scan(x))
    assert not CompactModel.new({"version": "old"}).scan.hp.local  # weights before the option: plain
    with pytest.raises(ValueError, match="unknown residual 'wavelet'"):
        CompactModel.new({"residual": "wavelet"})
