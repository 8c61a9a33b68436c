"""The search space: Hydra's sweeper grammar into parameters, the defaults they compare against, and one-line errors
for every bad range before anything runs."""

import pytest

from pgolf.errors import ConfigError
from pgolf.search.space import is_search_value, parse_param, parse_space


def params(*overrides):
    return {p.key: p for p in parse_space(list(overrides)).params}


def test_interval_and_log_interval_become_float_ranges_with_the_base_value_as_default():
    found = params("train.matrix_lr=tag(log, interval(0.01, 0.1))", "reg.weight_decay=interval(0, 0.1)",
                   "reg.weight_decay=0.05")
    lr, wd = found["train.matrix_lr"], found["reg.weight_decay"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 0.01, 0.1, True)
    assert (wd.kind, wd.low, wd.high, wd.log) == ("float", 0.0, 0.1, False)
    assert wd.default == "0.05"  # the plain value beside the range is the default, and not a base override
    assert lr.default == "0.04"  # the schema's/preset's value (conf/train/cpu_quick.yaml leaves matrix_lr alone)


def test_an_interval_on_an_integer_key_samples_integers():
    p = params("train.warmdown_steps=interval(10, 100)")["train.warmdown_steps"]
    assert (p.kind, p.low, p.high) == ("int", 10, 100)
    assert p.value_text(37.0) == "37"


def test_range_excludes_its_stop_as_python_and_the_grid_do():
    p = parse_param("export.bits", "range(4, 8, step=2)", int_field=True)
    assert (p.kind, p.low, p.high, p.step) == ("int", 4, 6, 2)  # 4, 6 (8 excluded)
    f = parse_param("reg.weight_decay", "range(0, 0.1, 0.04)", int_field=False)
    assert (f.kind, f.low, f.high, f.step) == ("float", 0.0, 0.08, 0.04)


def test_choice_and_comma_lists_are_categorical_config_groups_included():
    found = params("reg.ema_decay=choice(0, 0.98)", "model=tiny,records_tiny")
    assert found["reg.ema_decay"].choices == ["0", "0.98"]
    assert found["model"].choices == ["tiny", "records_tiny"]
    assert found["model"].default == "tiny"  # conf/config.yaml's defaults list


def test_plain_values_lists_and_dicts_are_base_overrides_not_ranges():
    assert not is_search_value("0.04")
    assert not is_search_value("[5,6,7]")
    assert is_search_value("0,0.04")
    space = parse_space(["train.matrix_lr=interval(0.01,0.1)", "fit.bits=[4,5]", "train.iterations=50"])
    assert space.base == ["fit.bits=[4,5]", "train.iterations=50"]


def test_the_shipped_search_file_parses_with_its_defaults_inside_the_ranges():
    found = params("search=tiny")
    assert set(found) == {"train.matrix_lr", "train.embed_lr", "reg.weight_decay", "reg.ema_decay",
                          "train.warmdown_steps"}
    for p in found.values():
        assert p.low <= float(p.default) <= p.high, p.key
    assert found["train.warmdown_steps"].default == "20"


@pytest.mark.parametrize("overrides, message", [
    (["train.iterations=50"], "empty search space"),
    (["train.matrix_lr=interval(0.1, 0.01)"], "must be below its high bound"),
    (["train.matrix_lr=interval(0.1, 0.1)"], "must be below its high bound"),
    (["train.matrix_lr=tag(log, interval(0, 0.1))"], "needs bounds > 0"),
    (["train.matrix_lr=tag(log, interval(-1, 0.1))"], "needs bounds > 0"),
    (["train.no_such_key=interval(0, 1)"], "train.no_such_key is not a config key"),
    (["budget.margin=interval(0, 10)"], "cannot be searched"),
    (["seed=1,2,3"], "cannot be searched"),
    (["train.iterations=interval(1.5, 9)"], "is an integer"),
    (["train.matrix_lr=choice(fast, slow)"], "bad config"),
    (["train.matrix_lr=tag(log, choice(1, 2))"], "tag(log, ...) applies to interval"),
    (["train.matrix_lr=glob(*)"], "not a search range"),
    (["train.matrix_lr=interval(0.01, 0.1)", "train.matrix_lr=interval(0.02, 0.1)"], "given twice"),
    (["search=no_such_file"], "no search file"),
])
def test_bad_spaces_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError) as info:
        parse_space(overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
