"""pack's own pieces: the overrides its README gives reproduce the packed config; recorded configs take overrides."""

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


def test_dotted_overrides_apply_to_a_recorded_config_and_presets_are_refused():
    cfg = merge_dotted(compose([]), ["data.dir=/data/x", "export.codec=rans", "reg.weight_decay=0.05"])
    assert (cfg.data.dir, cfg.export.codec, cfg.reg.weight_decay) == ("/data/x", "rans", 0.05)
    with pytest.raises(ConfigError, match="selects a preset"):
        merge_dotted(compose([]), ["data=fineweb_sp1024"])
    with pytest.raises(ConfigError, match="bad override"):
        merge_dotted(compose([]), ["model.depth=3"])
