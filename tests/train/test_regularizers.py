"""Regularizers: groups and their decay, and the effect of each knob on tiny models."""

import math

import pytest
import torch
from torch import nn

from pgolf.config import RegConfig
from pgolf.errors import ConfigError, TrainingError
from pgolf.train.penalties import penalty_terms, quant_error, sv_imbalance
from pgolf.train.qat import enable_qat, row_step
from pgolf.train.regularizers import (
    EarlyStopping,
    GapMonitor,
    apply_decoupled_decay,
    apply_l1_prox,
    check_finite,
    check_no_decay_names,
    clip_gradients,
    cross_entropy,
    decay_for,
    decay_multiplier,
    describe_decay,
    param_groups,
)

VOCAB, DIM = 32, 8


class Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_q = nn.Linear(DIM, DIM, bias=False)
        self.proj = nn.Linear(DIM, DIM, bias=False)
        self.q_gain = nn.Parameter(torch.full((2,), 1.5))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(DIM, 2 * DIM, bias=False)
        self.proj = nn.Linear(2 * DIM, DIM, bias=False)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.mlp = Attn(), MLP()
        self.attn_scale = nn.Parameter(torch.ones(DIM))
        self.mlp_scale = nn.Parameter(torch.ones(DIM))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(DIM), torch.zeros(DIM)]))  # (2, C): not a matrix

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:  # (B, C)
        x = self.resid_mix[0] * x + self.resid_mix[1] * x0
        x = x + self.attn_scale * self.attn.proj(self.attn.c_q(x) * self.attn.q_gain.mean())
        return x + self.mlp_scale * self.mlp.proj(torch.relu(self.mlp.fc(x)))


class StandIn(nn.Module):
    """Parameter names of the reference GPT, without attention (a bag-of-token classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, DIM)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.skip_weights = nn.Parameter(torch.ones(1, DIM))
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, V)
        x0 = x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x, x0) * self.skip_weights[0]
        return self.lm_head(x)


def named(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters())


# --------------------------------------------------------------------------- groups


def test_param_groups_follow_the_optimizer_split():
    groups = param_groups(named(StandIn()), RegConfig())
    names = {group: {name for name, _ in members} for group, members in groups.items()}
    assert names["matrix"] == {f"blocks.{i}.{m}.weight" for i in range(2)
                               for m in ("attn.c_q", "attn.proj", "mlp.fc", "mlp.proj")}
    assert names["embed"] == {"tok_emb.weight", "lm_head.weight"}
    assert "blocks.0.resid_mix" in names["scalar"] and "skip_weights" in names["scalar"]
    assert "blocks.1.attn.q_gain" in names["scalar"]


def test_param_groups_see_plain_names_while_qat_is_on():
    model = StandIn()
    plain = param_groups(named(model), RegConfig())
    enable_qat(model, 6, [name for name, _ in plain["matrix"]])
    under_qat = param_groups(named(model), RegConfig())
    assert {g: [n for n, _ in m] for g, m in under_qat.items()} == {g: [n for n, _ in m] for g, m in plain.items()}


def test_unknown_no_decay_entry_is_a_config_error():
    cfg = RegConfig(no_decay=["q_gain", "foo"])
    with pytest.raises(ConfigError, match="reg.no_decay entry 'foo' matches no parameter"):
        param_groups(named(StandIn()), cfg)
    # the defaults name optional parameters (ln_scale is absent here) and always pass
    check_no_decay_names(named(StandIn()), RegConfig())


def test_decay_for_uses_group_values_and_exclusions():
    cfg = RegConfig(weight_decay=0.09, embed_weight_decay=0.02, scalar_weight_decay=0.01,
                    no_decay=["q_gain", "lm_head"])
    assert decay_for("blocks.0.mlp.fc.weight", "matrix", cfg) == 0.09
    assert decay_for("tok_emb.weight", "embed", cfg) == 0.02
    assert decay_for("lm_head.weight", "embed", cfg) == 0.0
    assert decay_for("blocks.0.attn_scale", "scalar", cfg) == 0.01
    assert decay_for("blocks.0.attn.q_gain", "scalar", cfg) == 0.0


def test_describe_decay_names_groups_and_exclusions():
    cfg = RegConfig(weight_decay=0.09, embed_weight_decay=0.02)
    lines = describe_decay(param_groups(named(StandIn()), cfg), cfg)
    text = "\n".join(lines)
    assert "decay matrix: wd 0.09 on 8 tensors" in text
    assert "decay embed: wd 0.02 on 2 tensors" in text
    no_decay = next(line for line in lines if line.startswith("no decay"))
    assert "no decay: 9 tensors" in no_decay  # 4 per block + skip_weights
    assert "blocks.*.attn.q_gain" in no_decay and "skip_weights" in no_decay and "blocks.*.resid_mix" in no_decay
    assert "scalar" not in text.replace("no decay", "")  # scalar_weight_decay=0: nothing decays there


def test_decay_multiplier_schedules():
    constant = RegConfig(decay_schedule="constant", decay_schedule_factor=3.0)
    ramp = RegConfig(decay_schedule="ramp", decay_schedule_factor=3.0, decay_schedule_start=0.6)
    taper = RegConfig(decay_schedule="taper", decay_schedule_factor=0.5, decay_schedule_start=0.6)
    assert [decay_multiplier(p, constant) for p in (0, 0.5, 1)] == [1, 1, 1]
    assert decay_multiplier(0.3, ramp) == 1 and decay_multiplier(0.6, ramp) == 1
    assert decay_multiplier(0.8, ramp) == pytest.approx(2.0)
    assert decay_multiplier(1.0, ramp) == pytest.approx(3.0)
    assert decay_multiplier(0.8, taper) == pytest.approx(0.75)
    assert decay_multiplier(1.0, taper) == pytest.approx(0.5)
    values = [decay_multiplier(p / 100, ramp) for p in range(101)]
    assert values == sorted(values)


# --------------------------------------------------------------------------- effects


def _train_classifier(steps: int, seed: int = 0, decay_cfg: RegConfig | None = None, lr: float = 0.01,
                      **penalties) -> nn.Module:
    """Adam on a fixed next-token table (token t -> (3t+1) mod V), with optional decay and penalties."""
    torch.manual_seed(seed)
    model = StandIn()
    cfg = RegConfig(**penalties)
    groups = param_groups(named(model), decay_cfg or cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    idx = torch.arange(VOCAB).repeat(4)
    targets = (3 * idx + 1) % VOCAB
    for _ in range(steps):
        optimizer.zero_grad()
        logits = model(idx)
        loss = cross_entropy(logits, targets, cfg.label_smoothing)
        loss = loss + sum(penalty_terms(named(model), logits, cfg, export_bits=6).values())
        loss.backward()
        optimizer.step()
        if decay_cfg is not None:
            for group, members in groups.items():
                for name, param in members:
                    apply_decoupled_decay([param], lr, decay_for(name, group, decay_cfg))
    model.inputs, model.targets = idx, targets
    return model


def test_decay_step_scales_decayed_params_and_leaves_excluded_alone():
    model = StandIn()
    cfg = RegConfig(weight_decay=0.5, embed_weight_decay=0.25, scalar_weight_decay=0.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    lr = 0.1
    for group, members in param_groups(named(model), cfg).items():
        for name, param in members:
            apply_decoupled_decay([param], lr, decay_for(name, group, cfg))
    for name, param in model.named_parameters():
        wd = {"blocks.0.mlp.fc.weight": 0.5, "tok_emb.weight": 0.25, "blocks.0.attn_scale": 0.0}.get(name)
        if wd is not None:
            assert torch.allclose(param, before[name] * (1 - lr * wd))
        if "q_gain" in name or "resid_mix" in name:
            assert torch.equal(param, before[name])


def test_decay_shrinks_decayed_groups_during_training():
    cfg = RegConfig(weight_decay=2.0, embed_weight_decay=2.0)
    plain = _train_classifier(150, decay_cfg=RegConfig())
    decayed = _train_classifier(150, decay_cfg=cfg)

    def group_norm(model, group):
        return math.sqrt(sum(float(p.detach().square().sum()) for _, p in param_groups(named(model), cfg)[group]))

    assert group_norm(decayed, "matrix") < 0.8 * group_norm(plain, "matrix")
    assert group_norm(decayed, "embed") < 0.8 * group_norm(plain, "embed")


def _sparse_regression(l1: float, l2: float, steps: int = 300, lr: float = 0.05) -> torch.Tensor:
    """SGD on y = X w* with a half-zero w*; L1 as the proximal step, L2 as a loss term."""
    torch.manual_seed(0)
    x = torch.randn(256, 32)
    w_true = torch.randn(32) * (torch.arange(32) % 2)
    y = x @ w_true + 0.1 * torch.randn(256)
    w = nn.Parameter(torch.randn(32) * 0.5)
    optimizer = torch.optim.SGD([w], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        (nn.functional.mse_loss(x @ w, y) + l2 * w.square().sum()).backward()
        optimizer.step()
        apply_l1_prox([w], lr * l1)
    return w.detach()


def test_l1_makes_exact_zeros_where_l2_does_not():
    w_l1 = _sparse_regression(l1=0.05, l2=0.0)
    w_l2 = _sparse_regression(l1=0.0, l2=0.05)
    zeros_l1, zeros_l2 = int((w_l1 == 0).sum()), int((w_l2 == 0).sum())
    assert zeros_l1 >= 8 and zeros_l2 == 0, (zeros_l1, zeros_l2)
    assert int((w_l1[0::2] == 0).sum()) > int((w_l1[1::2] == 0).sum())  # zeros land where w* is zero


def test_penalty_terms_only_enabled_and_l1_detached():
    model = StandIn()
    logits = model(torch.arange(VOCAB))
    assert penalty_terms(named(model), logits, RegConfig(), 6) == {}
    cfg = RegConfig(l1=1e-3, l2=1e-3, z_loss=1e-4, qerr_penalty=1.0, sv_penalty=1e-2)
    terms = penalty_terms(named(model), logits, cfg, 6)
    assert set(terms) == {"l1", "l2", "z_loss", "qerr", "sv"}
    assert not terms["l1"].requires_grad and all(terms[k].requires_grad for k in ("l2", "z_loss", "qerr", "sv"))
    matrices = [p.detach() for name, p in named(model) if name.startswith("blocks.") and name.endswith(".weight")]
    assert terms["l1"].item() == pytest.approx(1e-3 * sum(float(p.abs().sum()) for p in matrices), rel=1e-5)
    assert terms["l2"].item() == pytest.approx(1e-3 * sum(float(p.square().sum()) for p in matrices), rel=1e-5)
    lse = torch.logsumexp(logits.detach(), dim=-1)
    assert terms["z_loss"].item() == pytest.approx(1e-4 * float((lse**2).mean()), rel=1e-5)


def test_quant_error_matches_definition():
    w = torch.tensor([[0.7, -0.35, 0.1], [-2.0, 0.5, 0.0]])
    delta = torch.tensor([0.7, 2.0]) / 31  # 6 bits: 31 levels each side
    expected = sum(float((w[r] ** 2).sum()) * float(delta[r]) ** 2 / 12 for r in range(2))
    assert quant_error(w, 6).item() == pytest.approx(expected, rel=1e-6)


def _outlier_ratio_after(penalty) -> tuple[float, float]:
    """Row max / row RMS before and after 50 SGD steps on `penalty(w)` for rows with one outlier each."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(8, 64) * 0.1)
    with torch.no_grad():
        w[:, 0] = 1.0  # one outlier per row sets a coarse grid

    def ratio() -> float:
        return float(w.detach().abs().amax(1).mean() / w.detach().pow(2).mean(1).sqrt().mean())

    before = ratio()
    optimizer = torch.optim.SGD([w], lr=0.01)
    for _ in range(50):
        optimizer.zero_grad()
        (1e3 * penalty(w)).backward()
        optimizer.step()
    return before, ratio()


def test_qerr_penalty_pulls_row_outliers_in():
    before, after = _outlier_ratio_after(lambda w: quant_error(w, 4))
    assert after < 0.7 * before  # a finer grid relative to the typical weight
    # with delta detached it is only an L2 weighted per row: the row's shape stays
    before, after_detached = _outlier_ratio_after(lambda w: (w.square() * row_step(w, 4).detach().square()).sum() / 12)
    assert after_detached == pytest.approx(before, rel=1e-3)


def test_sv_imbalance_matches_svdvals_and_its_penalty_balances():
    torch.manual_seed(0)
    w = torch.randn(6, 10) * torch.tensor([5.0, 1, 1, 1, 1, 0.1]).unsqueeze(1)
    s2 = torch.linalg.svdvals(w) ** 2
    assert sv_imbalance(w).item() == pytest.approx(float(s2.var(unbiased=False) / s2.mean() ** 2), rel=1e-4)
    assert sv_imbalance(torch.linalg.qr(torch.randn(10, 6)).Q.T).item() == pytest.approx(0, abs=1e-5)
    param = nn.Parameter(w.clone())
    optimizer = torch.optim.SGD([param], lr=2.0)
    for _ in range(100):
        optimizer.zero_grad()
        sv_imbalance(param).backward()
        optimizer.step()
    s = torch.linalg.svdvals(param.detach())
    assert float(s.max() / s.min()) < 0.5 * float(torch.linalg.svdvals(w).max() / torch.linalg.svdvals(w).min())


def test_z_loss_lowers_logsumexp():
    def mean_lse(model):
        with torch.no_grad():
            return float(torch.logsumexp(model(model.inputs), -1).abs().mean())

    plain = _train_classifier(200)
    with_z = _train_classifier(200, z_loss=1e-2)
    assert mean_lse(with_z) < 0.5 * mean_lse(plain)


def test_label_smoothing_raises_prediction_entropy():
    def mean_entropy(model):
        with torch.no_grad():
            probs = torch.softmax(model(model.inputs), -1)
            return float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())

    sharp = _train_classifier(200)
    smooth = _train_classifier(200, label_smoothing=0.2)
    assert mean_entropy(smooth) > 2 * mean_entropy(sharp)


def test_cross_entropy_is_torch_cross_entropy():
    logits, targets = torch.randn(2, 5, VOCAB), torch.randint(0, VOCAB, (2, 5))
    for smoothing in (0.0, 0.1):
        expected = nn.functional.cross_entropy(logits.view(-1, VOCAB), targets.view(-1), label_smoothing=smoothing)
        assert torch.allclose(cross_entropy(logits, targets, smoothing), expected)


# --------------------------------------------------------------------------- gradients and guards


def test_clipping_bounds_the_gradient_and_the_update():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 4)), nn.Parameter(torch.randn(3))]
    grads = [torch.randn(4, 4) * 10, torch.randn(3) * 10]
    full_norm = math.sqrt(sum(float(g.square().sum()) for g in grads))
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    before = [p.detach().clone() for p in params]

    norm = clip_gradients(params, max_norm=1.0)
    assert float(norm) == pytest.approx(full_norm, rel=1e-5)
    assert math.sqrt(sum(float(p.grad.square().sum()) for p in params)) <= 1.0 + 1e-5
    torch.optim.SGD(params, lr=0.1).step()
    change = math.sqrt(sum(float((p.detach() - b).square().sum()) for p, b in zip(params, before, strict=True)))
    assert change <= 0.1 * 1.0 + 1e-5


def test_clipping_off_still_reports_the_norm():
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert float(clip_gradients([p], max_norm=0.0)) == pytest.approx(5.0)
    assert torch.equal(p.grad, torch.tensor([3.0, 4.0, 0.0]))


def test_check_finite_names_the_step_and_the_kept_weights():
    check_finite(torch.tensor(3.2), step=5, last_good_step=4)
    with pytest.raises(TrainingError, match="loss became nan at step 123; kept the weights from step 120"):
        check_finite(torch.tensor(float("nan")), step=123, last_good_step=120)
    with pytest.raises(TrainingError, match="loss became inf at step 7"):
        check_finite(float("inf"), step=7, last_good_step=0)


def test_early_stopping_after_patience_bad_checks():
    stopper = EarlyStopping(patience=2)
    assert [stopper.update(v) for v in (1.5, 1.4, 1.45, 1.3, 1.31, 1.32)] == [False, False, False, False, False, True]
    assert stopper.best == 1.3
    never = EarlyStopping(patience=0)
    assert not any(never.update(v) for v in (1.0, 2.0, 3.0, 4.0))


def test_gap_monitor_warns_when_gap_is_large_and_growing():
    monitor = GapMonitor(threshold=0.1)
    assert monitor.update(train_bpb=1.30, val_bpb=1.35) is None  # small gap
    warning = monitor.update(train_bpb=1.20, val_bpb=1.35)
    assert warning is not None and "0.1500" in warning and "reg.gap_warn 0.1" in warning
    assert monitor.update(train_bpb=1.22, val_bpb=1.35) is None  # still large but shrinking
    assert monitor.update(train_bpb=1.10, val_bpb=1.36) is not None
