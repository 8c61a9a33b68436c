"""The study loop with a fake trial (no training): resume after SIGKILL redoes no finished trial, the pruner stops a
loser through the rung reports, stale trials of live workers are left alone, bad options are one-line errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pgolf.errors import ConfigError, MissingExtraError, UsageError
from pgolf.search import run as R
from pgolf.search import study as S

SPACE = ["train.matrix_lr=interval(0.01, 0.1)"]

# A fake trial: logs each call's values, reports its value at two rungs, returns it as the objective. With HANG_AT=n
# the n-th call (counting from 1) hangs after logging, so a test can kill the process mid-trial.
FAKE = textwrap.dedent("""
    import json, os, time
    from pgolf.search.trial import TrialOutcome, never_prune

    def fake_trial(setup, values, seed, report=never_prune):
        log = os.path.join(setup.folder, "calls.jsonl")
        with open(log, "a") as f:
            f.write(json.dumps(values) + "\\n")
        calls = sum(1 for _ in open(log))
        if calls == int(os.environ.get("HANG_AT", "0")):
            time.sleep(600)
        x = float(values["train.matrix_lr"])
        for resource in (1, 3):
            if report(resource, x):
                return TrialOutcome(setup.folder, True, [], 0.01)
        return TrialOutcome(setup.folder, False, [], 0.01, {"val_bpb_roundtrip": x})
""")


def settings(tmp_path, **kw):
    kw = {"trials": 5, "finalists": 0, "pruner": "none", **kw}
    return R.make_settings(SPACE + [f"run.root={tmp_path}"], name="study", **kw)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    module = {}
    exec(compile(FAKE, "fake_trial", "exec"), module)
    monkeypatch.setattr(R, "run_trial", module["fake_trial"])
    return lambda folder: [json.loads(line) for line in (Path(folder) / "calls.jsonl").read_text().splitlines()]


def test_a_search_runs_its_trials_and_a_rerun_resumes_without_running_any_again(fake, tmp_path):
    s = settings(tmp_path)
    first = R.run_search(s, echo=lambda _: None)
    assert len(fake(s.folder)) == 5 and (first.trials["state"] == "complete").all()
    assert R.run_search(settings(tmp_path), echo=lambda _: None).ran == 0
    assert len(fake(s.folder)) == 5
    assert R.run_search(settings(tmp_path, trials=7), echo=lambda _: None).ran == 2  # more trials extend it
    assert len(fake(s.folder)) == 7


def test_sigkill_mid_trial_then_rerun_redoes_no_finished_trial(fake, tmp_path):
    s = settings(tmp_path)
    script = tmp_path / "search.py"
    script.write_text(FAKE + textwrap.dedent(f"""
        from pgolf.search import run as R
        R.run_trial = fake_trial
        s = R.make_settings({SPACE + [f"run.root={tmp_path}"]!r}, name="study", trials=5, finalists=0, pruner="none")
        R.run_search(s)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "HANG_AT": "3"})
    log = Path(s.folder) / "calls.jsonl"
    deadline = time.time() + 60
    while (not log.is_file() or len(log.read_text().splitlines()) < 3) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = fake(s.folder)
    assert len(before) == 3  # two finished trials, the third killed mid-trial

    R.run_search(settings(tmp_path), echo=lambda _: None)
    after = fake(s.folder)[3:]
    assert before[2] == after[0]  # the killed trial is retried first, with its values (its run dir is reused)
    assert not [v for v in after if v in before[:2]]  # no finished trial redone
    frame = S.trials_frame(S.open_study(Path(s.folder)), s.parsed_space())
    assert (frame["state"] == "complete").sum() == 5 and frame["stale"].sum() == 1


def test_a_running_trial_of_a_live_worker_is_not_taken_for_stale(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    study = S.open_study(folder)
    with S.WorkerLock(folder) as lock:
        trial = study.ask()
        trial.set_user_attr("worker", lock.name)
        assert S.recover_stale(study, folder) == []  # same process, but flock is per open file: still held
    assert S.recover_stale(study, folder) == [trial.number]
    assert S.waiting(study) == 1


def _good_then_worse(tmp_path, pruner):
    """A search of two trials in a fixed order: a good learning rate first, then a worse one reaching its rungs."""
    s = settings(tmp_path, pruner=pruner, trials=2)
    S.prepare_folder(Path(s.folder), R._record(s))
    study = S.open_study(Path(s.folder))
    study.enqueue_trial({"train.matrix_lr": 0.02})
    study.enqueue_trial({"train.matrix_lr": 0.09})
    return R.run_search(s, echo=lambda _: None)


def test_the_pruner_stops_a_trial_whose_rung_score_trails(fake, tmp_path):
    out = _good_then_worse(tmp_path, "asha")
    states = dict(zip(out.trials["train.matrix_lr"].astype(float), out.trials["state"], strict=True))
    assert states == {0.02: "complete", 0.09: "pruned"}


def test_without_a_pruner_the_same_loser_runs_to_the_end(fake, tmp_path):
    out = _good_then_worse(tmp_path, "none")
    assert list(out.trials["state"]) == ["complete", "complete"]


def test_finalists_rerun_the_best_and_the_baseline_at_every_seed(fake, tmp_path):
    s = settings(tmp_path, trials=4, finalists=2, seeds=2)
    out = R.run_search(s, echo=lambda _: None)
    best = sorted(out.trials["objective"])[:2]
    labels = {(r["finalist"], r["seed"]) for r in out.finalists}
    assert len(labels) == 3 * 2 and {seed for _, seed in labels} == {1337, 1338}
    by_label = {r["finalist"]: float(r["train.matrix_lr"]) for r in out.finalists}
    assert by_label.pop("baseline") == 0.04  # the space's default
    assert sorted(by_label.values()) == pytest.approx(best)
    assert (Path(s.folder) / "finalists" / "sweep.yaml").is_file()


def test_a_folder_made_with_another_space_is_refused(fake, tmp_path):
    R.run_search(settings(tmp_path, trials=1), echo=lambda _: None)
    other = R.make_settings(["train.matrix_lr=interval(0.01, 0.2)", f"run.root={tmp_path}"], name="study", trials=1,
                            finalists=0, pruner="none")
    with pytest.raises(ConfigError, match="another search"):
        R.run_search(other, echo=lambda _: None)


@pytest.mark.parametrize("kw, message", [
    ({"trials": 0}, "--trials must be >= 1"),
    ({"jobs": 0}, "--jobs must be >= 1"),
    ({"sampler": "grid"}, "--sampler must be one of"),
    ({"pruner": "median"}, "--pruner must be one of"),
    ({"proxy": "loss"}, "--proxy must be val or cooldown"),
    ({"pruner": "asha", "trials": 2, "extra": ["train.iterations=3"]}, "too few steps"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path, kw, message):
    extra = kw.pop("extra", [])
    with pytest.raises(UsageError, match=message):
        R.make_settings(SPACE + extra + [f"run.root={tmp_path}"], **kw)


def test_a_wallclock_run_is_pruned_by_time_whatever_its_iterations(tmp_path):
    with pytest.raises(UsageError, match="too few steps"):  # 3 iterations alone hold no rung
        R.make_settings(SPACE + ["train.iterations=3", f"run.root={tmp_path}"], pruner="asha")
    settings = R.make_settings(SPACE + ["train.iterations=3", "train.wallclock_s=60", f"run.root={tmp_path}"],
                               pruner="asha")
    assert settings.pruner == "asha"  # the wallclock's rungs stand instead


def test_without_optuna_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingExtraError, match=r"pgolf\[search\]"):
        R.run_search(settings(tmp_path), echo=lambda _: None)


def test_durations_parse():
    assert [R.parse_duration(t) for t in ("2h", "30m", "90s", "1.5h", "600")] == [7200, 1800, 90, 5400, 600]
    with pytest.raises(UsageError):
        R.parse_duration("soon")

