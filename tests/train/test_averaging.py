"""EMA and SWA: the closed-form lag, the snapshot mean, and baseline-compatible state-dict keys."""

import pytest
import torch
from torch import nn

from pgolf.config import RegConfig
from pgolf.errors import ConfigError, TrainingError
from pgolf.train.averaging import EMA, SWA, ema_decay_at, make_weight_average
from pgolf.train.qat import enable_qat


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3, bias=False)
        self.gain = nn.Parameter(torch.ones(3))
        self.register_buffer("counter", torch.zeros(()))


def test_ema_lags_a_linear_ramp_by_the_closed_form():
    """After the decay warmup (min(decay, (1+n)/(10+n)) reaches decay at n = 80 for 0.9), the EMA of a ramp
    w_t = w0 + c*t lags it by c*d/(1-d) (steady state of the recursion), to within d^(steps since warmup)."""
    model = Tiny()
    w0, c, decay = model.fc.weight.detach().clone(), 0.1, 0.9
    ema = EMA(decay)
    steps = 300
    for step in range(steps):
        ema.update(model, step, step / steps)
        with torch.no_grad():
            model.fc.weight.add_(c)
    t = steps - 1  # last update saw w0 + c * t
    expected = w0 + c * t - c * decay / (1 - decay)
    averaged = ema.averaged_state_dict(model)
    assert torch.allclose(averaged["fc.weight"], expected, atol=1e-5)
    assert torch.allclose(averaged["gain"], torch.ones(3))  # a constant parameter's EMA is itself


def test_ema_decay_warms_up_then_holds():
    assert ema_decay_at(0.997, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.997, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(0.997, 10_000) == 0.997
    model = Tiny()
    ema = EMA(0.997)
    for step in range(200):
        with torch.no_grad():
            model.fc.weight.add_(0.01)
        ema.update(model, step, step / 200)
    lag = (model.fc.weight - ema.averaged_state_dict(model)["fc.weight"]).abs().max()
    assert lag < 0.01 * 200 * 0.5  # the warmed-up EMA keeps well under half of a 200-step drift behind


def test_swa_is_the_mean_of_its_snapshots():
    model = Tiny()
    swa = SWA(start_frac=0.5, every_steps=5)
    snapshots = []
    for step in range(40):
        with torch.no_grad():
            model.fc.weight.copy_(torch.randn(3, 4))
        if swa.update(model, step, step / 40):
            snapshots.append(model.fc.weight.detach().clone())
    assert len(snapshots) == 4  # steps 20, 25, 30, 35
    assert torch.allclose(swa.averaged_state_dict(model)["fc.weight"], torch.stack(snapshots).mean(0), atol=1e-6)


def test_state_dict_keys_match_the_live_model_even_under_qat():
    model = Tiny().to(torch.bfloat16)
    keys = list(model.state_dict())
    ema = EMA(0.99)
    handle = enable_qat(model, 4, ["fc.weight"], active=True)
    ema.update(model, 0, 0.0)
    state = ema.averaged_state_dict(model)
    assert list(state) == keys
    assert state["fc.weight"].dtype == torch.bfloat16 and "counter" in state
    handle.remove()
    model.load_state_dict(state)  # strict: same keys and shapes


def test_averaged_state_dict_is_a_copy():
    model = Tiny()
    ema = EMA(0.5)
    ema.update(model, 0, 0.0)
    state = ema.averaged_state_dict(model)
    before = state["fc.weight"].clone()
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    ema.update(model, 1, 0.1)
    assert torch.equal(state["fc.weight"], before)


def test_no_snapshot_yet_is_an_error():
    with pytest.raises(TrainingError, match="SWA has no weights yet"):
        SWA(0.9, 10).averaged_state_dict(Tiny())


def test_make_weight_average_from_config():
    assert make_weight_average(RegConfig()) is None
    assert isinstance(make_weight_average(RegConfig(ema_decay=0.997)), EMA)
    assert isinstance(make_weight_average(RegConfig(swa_start=0.8, swa_every=50)), SWA)
    with pytest.raises(ConfigError, match="choose EMA or SWA"):
        make_weight_average(RegConfig(ema_decay=0.997, swa_start=0.8))
