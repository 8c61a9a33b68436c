"""QAT: quantized forward, straight-through gradient, live switch under torch.compile, and its effect."""

import copy

import pytest
import torch
from torch import nn

from pgolf.errors import ConfigError
from pgolf.train.qat import canonical_name, enable_qat, fake_quantize_rows, plain_state_dict, quantize_rows

MATRICES = ["fc.weight", "proj.weight"]


class TinyMLP(nn.Module):
    def __init__(self, d_in: int = 8, d_hidden: int = 16, d_out: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_hidden, bias=False)
        self.proj = nn.Linear(d_hidden, d_out, bias=False)
        self.scale = nn.Parameter(torch.ones(d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d_in) -> (B, d_out)
        return self.proj(torch.relu(self.fc(x))) * self.scale


def quantized_copy(model: nn.Module, bits: int) -> nn.Module:
    """A plain copy of `model` whose matrices hold their fake-quantized values."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in out.named_parameters():
            if name in MATRICES:
                param.copy_(fake_quantize_rows(param, bits))
    return out


def test_fake_quantize_rows_uses_row_max_grid():
    w = torch.tensor([[0.9, -0.3, 0.05, 0.0], [2.0, 1.0, -1.4, 0.1]])
    codes, step = quantize_rows(w, 3)  # 3 levels each side
    assert torch.allclose(step.squeeze(1), torch.tensor([0.3, 2.0 / 3]))
    assert codes.abs().max() <= 3 and codes.dtype == torch.int8
    assert torch.equal(codes[:, 0], torch.tensor([3, 3], dtype=torch.int8))
    assert (fake_quantize_rows(w, 3) - w).abs().le(step / 2 + 1e-6).all()


def test_qat_forward_is_quantized_and_gradient_is_straight_through():
    torch.manual_seed(0)
    model = TinyMLP()
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    reference = quantized_copy(model, 4)
    handle = enable_qat(model, 4, MATRICES, active=True)

    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    ref_loss = nn.functional.mse_loss(reference(x), y)
    ref_loss.backward()

    assert torch.allclose(loss, ref_loss)
    params = {canonical_name(n): p for n, p in model.named_parameters()}
    for name, ref_param in reference.named_parameters():
        assert torch.allclose(params[name].grad, ref_param.grad), name
    # the latent weights are not themselves quantized
    assert not torch.equal(params["fc.weight"], reference.fc.weight)

    assert handle.active
    handle.set_active(False)
    assert not handle.active
    assert not torch.allclose(model(x), reference(x))


def test_remove_restores_plain_parameters_and_keys():
    model = TinyMLP()
    keys = list(model.state_dict())
    fc = model.fc.weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = enable_qat(model, 3, MATRICES, active=True)
    assert list(plain_state_dict(model)) == keys
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()  # the optimizer built before QAT still trains the latent weights
    handle.remove()
    assert list(model.state_dict()) == keys
    assert model.fc.weight is fc
    assert not torch.equal(model.fc.weight, fake_quantize_rows(model.fc.weight, 3))


def test_switches_on_under_torch_compile_without_recompiling():
    torch.manual_seed(0)
    model = TinyMLP()
    x = torch.randn(16, 8)
    plain_out = model(x)
    quant_out = quantized_copy(model, 3)(x)
    handle = enable_qat(model, 3, MATRICES)

    graphs = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend)
    with torch.no_grad():
        off = compiled(x)
        handle.set_active(True)
        on = compiled(x)
        handle.set_active(False)
        off_again = compiled(x)

    assert len(graphs) == 1  # one dynamo capture served all three calls
    placeholders = [node.target for node in graphs[0].graph.nodes if node.op == "placeholder"]
    assert any("active" in target for target in placeholders)  # the flag is a graph input, not a constant
    assert torch.allclose(off, plain_out) and torch.allclose(off_again, plain_out)
    assert torch.allclose(on, quant_out)
    assert not torch.allclose(on, off)


@pytest.mark.slow
def test_switches_on_under_inductor_and_trains_through_it():
    """The records' pitfall was with the default (inductor) backend: compile for real, forward and backward."""
    torch.manual_seed(0)
    model = TinyMLP()
    x = torch.randn(16, 8)
    plain_out = model(x).detach()
    quant_out = quantized_copy(model, 3)(x).detach()
    handle = enable_qat(model, 3, MATRICES)
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch._dynamo.config.patch(error_on_recompile=True):
        off = compiled(x)
        handle.set_active(True)
        on = compiled(x)
        on.square().sum().backward()
    assert torch.allclose(off, plain_out, atol=1e-6)
    assert torch.allclose(on, quant_out, atol=1e-6)
    latent = dict(model.named_parameters())["fc.parametrizations.weight.original"]
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def _train(qat_bits: int, steps: int = 800) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Fit a teacher MLP with Adam and a linear LR decay; QAT (when qat_bits) on for the second half."""
    torch.manual_seed(1)
    teacher = TinyMLP(d_hidden=64)
    x = torch.randn(512, 8)
    with torch.no_grad():
        y = teacher(x)
    torch.manual_seed(2)
    student = TinyMLP(d_hidden=64)
    handle = enable_qat(student, qat_bits, MATRICES) if qat_bits else None
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    for step in range(steps):
        if handle is not None and step == steps // 2:
            handle.set_active(True)
        optimizer.zero_grad()
        nn.functional.mse_loss(student(x), y).backward()
        optimizer.step()
        schedule.step()
    if handle is not None:
        handle.remove()
    return student, x, y


@pytest.fixture(scope="module")
def plain_run():
    return _train(0)


@pytest.mark.parametrize("bits", [3, 4])
def test_qat_lowers_loss_after_quantization(bits, plain_run):
    plain, x, y = plain_run
    qat, _, _ = _train(bits)
    with torch.no_grad():
        plain_loss = nn.functional.mse_loss(quantized_copy(plain, bits)(x), y).item()
        qat_loss = nn.functional.mse_loss(quantized_copy(qat, bits)(x), y).item()
    # measured with these seeds: about 3.9x lower at 3 bits, 2.4x at 4 bits (other seeds: >= 1.4x)
    assert qat_loss < plain_loss / 1.25, (qat_loss, plain_loss)


@pytest.mark.parametrize("bits", [1, 9])
def test_bits_out_of_range_is_a_config_error(bits):
    with pytest.raises(ConfigError, match="reg.qat_bits must be in 2..8"):
        enable_qat(TinyMLP(), bits, MATRICES)


def test_unknown_or_non_matrix_names_are_rejected():
    with pytest.raises(ConfigError, match="no parameter 'fc.bias'"):
        enable_qat(TinyMLP(), 4, ["fc.bias"])
    with pytest.raises(ConfigError, match="not a matrix"):
        enable_qat(TinyMLP(), 4, ["scale"])
