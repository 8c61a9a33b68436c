"""`pgolf train reg=...` as a user runs it: the records preset trains, bad regularizer input is a one-line error."""

import json

import pytest
from safetensors.torch import load_file

from pgolf.config import load_yaml
from pgolf.jobs.models import build_model

from .conftest import QUICK, one_line_error, run_pgolf, run_pgolf_each

pytestmark = pytest.mark.slow

SHORT = [*QUICK, "train.batch_tokens=2048"]


def test_reg_records_trains_and_its_knobs_are_live(tmp_path, data_overrides):
    # the record trains without QAT: turned on here so its switch is checked through the CLI too
    proc = run_pgolf("train", *data_overrides, *SHORT, "reg=records", "reg.qat_bits=6", "--json", cwd=tmp_path,
                     check_code=0)
    summary = json.loads(proc.stdout)
    assert summary["stop_reason"] == "completed" and summary["steps"] == 30
    run_dir = tmp_path / summary["run_dir"]
    log = (run_dir / "train.log").read_text()
    assert "decay matrix: wd 0.095" in log and "decay embed: wd 0.085" in log and "no decay:" in log
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    qat = {r["step"]: r["qat_active"] for r in records if "qat_active" in r}
    assert not qat[10] and qat[30]  # reg.qat_start=0.85 of 30 steps: on from step 26
    assert all("pen_" not in key for r in records for key in r)  # records uses no loss penalties
    assert set(summary["weight_diagnostics"]) == {"matrix", "embed", "scalar"}
    weights = load_file(str(run_dir / "model.safetensors"))
    expected = build_model(load_yaml(run_dir / "config.yaml")).state_dict()
    assert set(weights) == set(expected)  # QAT parametrizations gone: baseline keys


BAD_REGS = [
    ("reg.weight_decay=-1", ["reg.weight_decay", ">= 0"]),
    ("reg.l1=abc", ["reg.l1", "abc"]),
    ("reg.no_decay=[nonexistent_param]", ["reg.no_decay", "nonexistent_param"]),
    ("reg.qat_bits=9", ["reg.qat_bits", "2..8"]),
]


@pytest.fixture(scope="module")
def bad_regs(tmp_path_factory, builtin_data):
    """Each bad training of BAD_REGS, in a folder of its own, run in turn in one interpreter: override -> process."""
    data = [f"data.dir={builtin_data}", f"data.tokenizer={builtin_data / 'tokenizer.model'}"]
    procs = run_pgolf_each([(["train", *data, *SHORT, override], tmp_path_factory.mktemp("reg"))
                            for override, _ in BAD_REGS])
    return {override: proc for (override, _), proc in zip(BAD_REGS, procs, strict=True)}


@pytest.mark.parametrize("override,fragments", BAD_REGS)
def test_bad_regularizer_input_is_a_one_line_error(bad_regs, override, fragments):
    proc = bad_regs[override]
    assert proc.returncode == 1
    message = one_line_error(proc)
    for fragment in fragments:
        assert fragment in message, message
