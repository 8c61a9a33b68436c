"""The typed schema (pgolf/schema.py): `to_dict` and `from_plain` rebuild a config exactly (the packed script and
artifact records travel as plain dicts and JSON); an unknown key is a one-line ConfigError naming it."""

import json

import pytest

from pgolf.config import compose
from pgolf.errors import ConfigError
from pgolf.schema import Config, ExportConfig, GroupBits, from_plain, to_dict


@pytest.mark.parametrize("overrides", [
    [],
    ["model=records_tiny", "reg=records"],
    ["export.tensor_bits={blocks.0.mlp.fc.weight:7}", "export.group_bits.embed=7", "export.code_files=[a.py]",
     "model.xsa_layers=[1,2]", "seed=9"],
], ids=["default", "records_tiny+records", "dicts-and-lists"])
def test_to_dict_and_from_plain_rebuild_the_config(overrides):
    cfg = compose(overrides)
    plain = to_dict(cfg)
    rebuilt = from_plain(Config, plain)
    assert rebuilt == cfg
    assert isinstance(rebuilt.export, ExportConfig) and isinstance(rebuilt.export.group_bits, GroupBits)
    through_json = from_plain(Config, json.loads(json.dumps(plain)))  # as an artifact record stores it
    assert through_json == cfg and to_dict(through_json) == plain


def test_the_schema_defaults_round_trip_and_missing_keys_keep_defaults():
    assert from_plain(Config, to_dict(Config())) == Config()
    assert from_plain(Config, {}) == Config()
    partial = from_plain(Config, {"train": {"iterations": 7}, "export": {"group_bits": {"embed": 6}}})
    assert partial.train.iterations == 7 and partial.export.group_bits.embed == 6
    assert partial.export.group_bits.attn_q == GroupBits().attn_q and partial.model == Config().model


def test_records_knobs_survive_the_round_trip():
    cfg = compose(["model=records_tiny", "reg=records", "export=records", "ttt=records"])
    assert cfg.model.recur_passes == 3 and cfg.model.xsa_layers == [0, 1, 2, 3, 4, 5] and cfg.reg.ema_decay == 0.9965
    rebuilt = from_plain(Config, json.loads(json.dumps(to_dict(cfg))))
    assert (rebuilt.model.recur_passes, rebuilt.model.xsa_layers, rebuilt.reg.ema_decay) == (3, [0, 1, 2, 3, 4, 5],
                                                                                              0.9965)
    assert rebuilt.export == cfg.export and rebuilt.ttt == cfg.ttt  # nested group k's and TTT targets too


@pytest.mark.parametrize("plain, key", [
    ({"train": {"nope": 1}}, "nope"),
    ({"bogus": 1}, "bogus"),
    ({"export": {"group_bits": {"emb": 8}}}, "emb"),
    ({"model": {"depth": 3, "num_layers": 2}}, "depth"),
])
def test_an_unknown_key_is_a_one_line_config_error_naming_it(plain, key):
    with pytest.raises(ConfigError) as info:
        from_plain(Config, plain)
    message = str(info.value)
    assert key in message and "\n" not in message
    assert info.value.exit_code == 1
