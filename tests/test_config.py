"""Config composition: every shipped preset composes, bad overrides are one-line errors, sizes parse exactly."""

import dataclasses

import pytest

from pgolf import config as C
from pgolf.errors import ConfigError


def _presets():
    for group_dir in sorted(p for p in C.conf_dir().iterdir() if p.is_dir() and p.name not in ("sweep", "search")):
        for yaml in sorted(group_dir.glob("*.yaml")):
            yield f"{group_dir.name}={yaml.stem}"


@pytest.mark.parametrize("override", list(_presets()))
def test_every_shipped_preset_composes(override):
    cfg = C.compose([override])
    assert isinstance(cfg, C.Config)
    assert isinstance(cfg.model, C.ModelConfig)


def test_presets_change_what_they_say():
    base = C.compose([])
    baseline = C.compose(["model=baseline"])
    assert (baseline.model.num_layers, baseline.model.model_dim) == (9, 512)
    assert (base.model.num_layers, base.model.model_dim) != (9, 512)
    records = C.compose(["reg=records", "reg.weight_decay=0.05"])
    assert records.reg.weight_decay == 0.05 and records.reg.ema_decay == 0.9965
    ref = C.compose(["export=int8_zlib"])
    assert (ref.export.bits, ref.export.codec, ref.export.clip) == (8, "zlib", "percentile")


@pytest.mark.parametrize("override,fragment", [
    (["model.no_such_key=1"], "model.no_such_key"),
    (["train.seq_len=abc"], "train.seq_len"),
    (["reg.weight_decay=-1"], "reg.weight_decay must be >= 0"),
    (["reg.qat_bits=12"], "reg.qat_bits"),
    (["export.bits=9"], "export.bits must be in 2..8"),
    (["model=nope"], "model/nope"),
    (["reg.weight_decay=0,0.1"], "pgolf sweep"),
    (["export.group_bits.mlp_in=9"], "export.group_bits.mlp_in"),
    (["export.group_bits.embedd=8"], "export.group_bits.embedd"),
    (["fit.bits=[]"], "fit.bits is empty"),
    (["fit.embed_bits=[5,9]"], "fit.embed_bits values must be in 2..8"),
    (["fit.max_prune=1.5"], "fit.max_prune"),
    (["fit.codecs=[snappy]"], "fit.codecs"),
    (["fit.bitz=[5]"], "fit.bitz"),
    (["export.tensor_bits={blocks.0.mlp.fc.weight:9}"], "export.tensor_bits[blocks.0.mlp.fc.weight]"),
])
def test_bad_override_is_one_line_error_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as info:
        C.compose(override)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_validation_reports_every_problem_together():
    with pytest.raises(ConfigError) as info:
        C.compose(["reg.weight_decay=-1", "reg.dropout=2", "fit.bits=[]", "fit.evals=0"])
    for key in ("reg.weight_decay", "reg.dropout", "fit.bits", "fit.evals"):
        assert key in str(info.value)


def test_fit_overrides_set_the_search_space_and_leave_the_rest():
    default = C.compose([]).fit
    fit = C.compose(["fit.bits=[5,6,7]", "fit.max_prune=0.2", "fit.clips=[mse,sdclip]"]).fit
    assert (fit.bits, fit.max_prune, fit.clips) == ([5, 6, 7], 0.2, ["mse", "sdclip"])
    assert default.bits != fit.bits and (fit.embed_bits, fit.evals) == (default.embed_bits, default.evals)


def test_tensor_bits_take_dotted_tensor_names_and_survive_the_saved_config(tmp_path):
    cfg = C.compose(["export.tensor_bits={blocks.0.mlp.fc.weight:7,tok_emb.weight:16}"])
    assert cfg.export.tensor_bits == {"blocks.0.mlp.fc.weight": 7, "tok_emb.weight": 16}
    path = tmp_path / "config.yaml"
    path.write_text(C.to_yaml(cfg))
    assert C.load_yaml(path).export.tensor_bits == cfg.export.tensor_bits


@pytest.mark.parametrize("text,expected", [
    ("16MB", 16_000_000), ("15.5MB", 15_500_000), ("16MiB", 16_777_216), ("16000000", 16_000_000),
    ("512KB", 512_000), ("1.5kib", 1536), (1234, 1234), ("16_000_000", 16_000_000),
])
def test_parse_size_is_decimal_unless_binary_units(text, expected):
    assert C.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "16XB", "-5MB", "1.2345B"])
def test_parse_size_rejects_garbage(text):
    with pytest.raises(ConfigError):
        C.parse_size(text)


def test_saved_config_round_trips(tmp_path):
    cfg = C.compose(["model=baseline", "reg=records"])
    path = tmp_path / "config.yaml"
    path.write_text(C.to_yaml(cfg))
    assert C.load_yaml(path) == cfg


def test_every_field_has_a_docstring():
    for cls in (C.RunConfig, C.DataConfig, C.ModelConfig, C.TrainConfig, C.RegConfig, C.ExportConfig, C.GroupBits,
                C.GroupClipK, C.BudgetConfig, C.FitConfig, C.TTTConfig):
        docs = C.field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in docs]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
