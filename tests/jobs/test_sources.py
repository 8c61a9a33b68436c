"""How export, eval, fit-budget and pack read a run directory's own config."""

from pgolf import config as C
from pgolf.atomic import atomic_write_text
from pgolf.jobs.sources import config_for_source


def test_a_run_directory_keeps_its_model_training_and_data_unless_a_preset_replaces_them(tmp_path):
    trained = C.compose(["model=baseline", "reg=records", "train=h100_10min", "data.dir=/d", "seed=7"])
    atomic_write_text(tmp_path / "config.yaml", C.to_yaml(trained))
    cfg = config_for_source(tmp_path, ["export.bits=5", "train.seq_len=512", "reg.weight_decay=0.05"])
    assert cfg.model == trained.model and cfg.data == trained.data and cfg.seed == 7
    assert cfg.reg.weight_decay == 0.05 and cfg.reg.qat_bits == trained.reg.qat_bits
    assert cfg.train.seq_len == 512 and cfg.train.iterations == trained.train.iterations
    assert cfg.export.bits == 5 and cfg.export.clip == C.compose([]).export.clip  # export: defaults + overrides
    fresh = config_for_source(tmp_path, ["data=fineweb_sp1024"])
    assert fresh.data == C.compose(["data=fineweb_sp1024"]).data and fresh.model == trained.model


def test_a_file_source_is_just_the_composed_config(tmp_path):
    assert config_for_source(tmp_path / "model.safetensors", ["export.bits=5"]) == C.compose(["export.bits=5"])
