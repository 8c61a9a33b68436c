"""pack's own pieces: the overrides its README gives reproduce the packed config; recorded configs take overrides."""

import dataclasses

import pytest

from pgolf.bundle.graph import PACKED_SECTIONS
from pgolf.config import compose, merge_dotted
from pgolf.errors import ConfigError
from pgolf.ship import pack


@pytest.mark.parametrize("overrides", [
    [],
    ["model=baseline", "train=h100_10min", "reg=records", "data=fineweb_sp1024"],
    ["reg=none", "export=int8_zlib", "export.tensor_bits={blocks.0.mlp.fc.weight:7,blocks.1.attn.c_q.weight:16}",
     "data.dir=/tmp/some dir/x", "data.train_pattern=*_tr_*.bin", "seed=7", "train.compile=true"],
])
def test_the_readme_command_composes_the_packed_config(overrides):
    cfg = compose(overrides)
    again = compose(pack.reproduce_overrides(cfg))
    for section in PACKED_SECTIONS:
        assert getattr(again, section) == getattr(cfg, section), section


def test_overrides_apply_to_a_recorded_config_presets_replacing_their_part():
    cfg = merge_dotted(compose([]), ["data.dir=/data/x", "export.codec=rans", "reg.weight_decay=0.05"])
    assert (cfg.data.dir, cfg.export.codec, cfg.reg.weight_decay) == ("/data/x", "rans", 0.05)
    saved = compose(["ttt.chunk=7"])
    cfg = merge_dotted(saved, ["ttt=cpu", "ttt.rank=4", "seed=9"])
    assert cfg.ttt == dataclasses.replace(compose(["ttt=cpu"]).ttt, rank=4) and cfg.seed == 9
    assert saved.ttt.chunk == 7 and saved.ttt.name == "none"  # the saved config itself is not changed
    with pytest.raises(ConfigError, match="ttt/nosuch"):
        merge_dotted(compose([]), ["ttt=nosuch"])
    with pytest.raises(ConfigError, match="bad override"):
        merge_dotted(compose([]), ["model.depth=3"])
