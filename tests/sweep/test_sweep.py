"""Sweep planning: Hydra's grammar expands the grid, axes split into trainings and export points, seeds pair,
names and cell ids are deterministic, a folder's grid may only be extended, and bad grids are refused."""

import pytest

from pgolf import config as C
from pgolf.errors import ConfigError, UsageError
from pgolf.sweep.plan import TRAIN_POINT, cell_id, grid_mismatch, load_sweep_file, make_plan, prepare_folder


@pytest.fixture
def root(tmp_path):
    return [f"run.root={tmp_path / 'runs'}"]


def test_hydra_grammar_expands_lists_ranges_and_choices():
    base, axes = C.parse_sweep(["reg.weight_decay=0,0.04,0.04", "export.bits=range(4,7)", "model=choice(tiny,baseline)",
                                "train.iterations=10", "export.tensor_bits={a.b:7}"])
    assert base == ["train.iterations=10", "export.tensor_bits={a.b:7}"]
    assert [(a.key, a.values) for a in axes] == [("reg.weight_decay", ["0", "0.04"]),
                                                 ("export.bits", ["4", "5", "6"]), ("model", ["tiny", "baseline"])]


@pytest.mark.parametrize("bad, words", [
    (["reg.weight_decay=interval(0,1)"], "interval"),
    (["model=glob(*)"], "glob"),
    (["reg.weight_decay=range(0,0)"], "no values"),
    (["reg.weight_decay=0,,1"], "bad override"),
    (["reg.weight_decay=0", "reg.weight_decay=1,2"], "twice"),
])
def test_malformed_grids_are_one_line_config_errors(bad, words):
    with pytest.raises(ConfigError, match=words):
        C.parse_sweep(bad)


def test_training_axes_give_one_training_each_and_export_axes_only_export_points(root):
    plan = make_plan(["reg.weight_decay=0,0.04,0.09", "export.prune=0,0.02,0.05", *root])
    assert len(plan.cells) == 3 and len(plan.points) == 3
    assert [p.label for p in plan.points] == ["export.prune=0", "export.prune=0.02", "export.prune=0.05"]
    assert [c.values for c in plan.cells] == [{"reg.weight_decay": v} for v in ("0", "0.04", "0.09")]
    assert all(f"reg.weight_decay={c.values['reg.weight_decay']}" in c.overrides for c in plan.cells)
    assert not any(o.startswith("export.") for c in plan.cells for o in c.overrides)


def test_without_export_axes_the_training_export_is_the_one_point(root):
    plan = make_plan(["reg.weight_decay=0,0.04", *root], max_bytes=420_000)
    assert [p.label for p in plan.points] == [TRAIN_POINT]
    assert plan.rows_per_cell() == 2  # the training's export and the fit-budget


def test_seeds_are_the_same_in_every_cell_so_they_pair(root):
    plan = make_plan(["reg.weight_decay=0,0.04", "seed=7", *root], seeds=3)
    assert plan.seeds == [7, 8, 9]
    assert [(c.values["reg.weight_decay"], c.seed) for c in plan.cells] == [
        ("0", 7), ("0", 8), ("0", 9), ("0.04", 7), ("0.04", 8), ("0.04", 9)]
    assert all(c.overrides[-1] == f"seed={c.seed}" for c in plan.cells)
    assert len({c.cell_id for c in plan.cells}) == 6


def test_a_seed_axis_is_the_seed_list(root):
    plan = make_plan(["reg.weight_decay=0,0.04", "seed=1,2", *root])
    assert plan.seeds == [1, 2] and len(plan.cells) == 4 and "seed" not in plan.grid()["axes"]


def test_cell_ids_are_readable_deterministic_and_distinct():
    assert cell_id({"reg.weight_decay": "0.04"}, 1337) == cell_id({"reg.weight_decay": "0.04"}, 1337)
    assert cell_id({"reg.weight_decay": "0.04"}, 1337).startswith("weight_decay=0.04-seed=1337-")
    assert cell_id({"a.x": "1", "b.x": "2"}, 1) != cell_id({"a.x": "2", "b.x": "1"}, 1)
    assert "/" not in cell_id({"data.dir": "/tmp/a b"}, 1)


def test_the_derived_name_is_fixed_by_keys_and_base_not_values(root):
    a = make_plan(["reg.weight_decay=0,0.04", "train.iterations=10", *root])
    assert make_plan(["reg.weight_decay=0,0.04", "train.iterations=10", *root]).name == a.name
    assert make_plan(["reg.weight_decay=0,0.04,0.09", "train.iterations=10", *root]).name == a.name
    assert make_plan(["reg.weight_decay=0,0.04", "train.iterations=20", *root]).name != a.name
    assert make_plan(["reg.weight_decay=0,0.04", "train.iterations=10", *root], name="mine").name == "mine"


@pytest.mark.parametrize("args, kwargs, error, words", [
    ([], {}, UsageError, "empty grid"),
    (["reg.weight_decay=0,1"], {"seeds": 0}, UsageError, "--seeds"),
    (["reg.weight_decay=0,1", "seed=1,2"], {"seeds": 2}, UsageError, "not both"),
    (["reg.nope=0,1"], {}, ConfigError, "reg.nope"),
    (["reg.weight_decay=0,-1"], {}, ConfigError, "reg.weight_decay must be >= 0"),
    (["run.name=a,b"], {}, ConfigError, "cannot be a sweep axis"),
    (["fit.max_prune=0,0.1"], {}, ConfigError, "cannot be a sweep axis"),
    (["reg.weight_decay=0,1"], {"baseline": ["reg.weight_decay=5"]}, UsageError, "not among"),
    (["reg.weight_decay=0,1"], {"baseline": ["export.bits=5"]}, UsageError, "not a swept key"),
    (["reg.weight_decay=0,1"], {"name": "../escape"}, UsageError, "--name"),
])
def test_bad_grids_are_refused_before_anything_runs(root, args, kwargs, error, words):
    with pytest.raises(error, match=words):
        make_plan([*args, *root], **kwargs)


def test_a_runs_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file"):
        make_plan(["reg.weight_decay=0,1", f"run.root={tmp_path / 'runs'}"])


def test_a_folder_may_only_be_extended(root):
    plan = make_plan(["reg.weight_decay=0,0.04", *root], name="s")
    prepare_folder(plan)
    prepare_folder(make_plan(["reg.weight_decay=0,0.04,0.09", *root], name="s"))  # more values: an extension
    prepare_folder(make_plan(["reg.weight_decay=0,0.04,0.09", *root], name="s", seeds=2))  # more seeds too
    for other in (["reg.weight_decay=0.04,0.09", *root], ["reg.weight_decay=0,0.04,0.09", "export.bits=5,6", *root],
                  ["reg.weight_decay=0,0.04,0.09", "train.iterations=5", *root]):
        with pytest.raises(ConfigError, match="another grid"):
            prepare_folder(make_plan(other, name="s"))
    assert grid_mismatch(plan.grid(), plan.grid()) == ""


def test_a_sweep_file_gives_axes_and_base_and_the_command_line_adds_to_it(tmp_path, monkeypatch, root):
    conf = tmp_path / "conf"
    (conf / "sweep").mkdir(parents=True)
    for path in C.conf_dir().rglob("*.yaml"):
        target = conf / path.relative_to(C.conf_dir())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (conf / "sweep" / "mine.yaml").write_text(
        "params:\n  reg.weight_decay: 0,0.04\n  train.matrix_lr: [0.02, 0.04]\noverrides:\n  - train.iterations=10\n")
    monkeypatch.setenv("PGOLF_CONF", str(conf))
    assert load_sweep_file("mine") == (["train.iterations=10"], ["reg.weight_decay=0,0.04",
                                                                 "train.matrix_lr=0.02,0.04"])
    plan = make_plan(["sweep=mine", "train.matrix_lr=0.08", "export.bits=5,6", *root])
    assert [a.key for a in plan.train_axes] == ["reg.weight_decay"] and len(plan.cells) == 2
    assert "train.matrix_lr=0.08" in plan.base and "train.iterations=10" in plan.base
    assert len(plan.points) == 2
    with pytest.raises(ConfigError, match="no sweep file.*available: .*mine"):
        make_plan(["sweep=absent", *root])


def test_the_shipped_sweep_files_plan():
    for path in (C.conf_dir() / "sweep").glob("*.yaml"):
        plan = make_plan([f"sweep={path.stem}"])
        assert plan.cells, path
