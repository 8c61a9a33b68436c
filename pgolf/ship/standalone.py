"""The main of the `train_gpt.py` that `pgolf pack` ships: train, export, read back and score; or score an artifact.

It runs on the modules the bundle carries (no Hydra, typer, rich or
safetensors), with the packed config (`schema.from_plain`, fields not given
keep the schema defaults) and the reference script's environment variables
on top (ENV below). Two modes:

- `python train_gpt.py` (or under `torchrun`): train the packed config, export
  it with the packed export config to `final_model.pgolf`, read that back and
  score it on the validation set; the log goes to `logs/<RUN_ID>.txt`.
- `python train_gpt.py --eval ARTIFACT`: score an artifact only.

Both end with the line `val_bpb:<value>` (10 decimals), as the challenge reads it: the score after test-time
training when the packed config has it (`ttt`, pgolf/ttt), printed after the static round-trip score.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pgolf.errors import ConfigError, Interrupted, PgolfError, TrainingError
from pgolf.export.artifact import load_artifact
from pgolf.jobs.roundtrip import export_roundtrip
from pgolf.jobs.scorer import Scorer, Scores
from pgolf.jobs.start import start_training
from pgolf.runtime.device import resolve_device
from pgolf.runtime.distributed import shutdown
from pgolf.schema import Config, from_plain
from pgolf.train.loop import NullMetrics, train_model

ARTIFACT = "final_model.pgolf"
ENV = {
    "DATA_PATH": "data.dir",
    "TOKENIZER_PATH": "data.tokenizer",
    "VAL_PATTERN": "data.val_pattern",
    "VAL_TOKENS": "data.val_tokens",
    "ITERATIONS": "train.iterations",
    "MAX_WALLCLOCK_SECONDS": "train.wallclock_s",
    "TRAIN_BATCH_TOKENS": "train.batch_tokens",
    "TRAIN_SEQ_LEN": "train.seq_len",
    "SEED": "seed",
}
"""Environment variable -> the config field it sets (the reference script's names where it has them)."""


def apply_env(cfg: Config, environ: dict[str, str]) -> list[str]:
    """Set the fields named by ENV from `environ`, as the type the field holds; returns `NAME=value` for each."""
    applied = []
    for name, key in ENV.items():
        text = environ.get(name)
        if not text:
            continue
        *section, field = key.split(".")
        record = getattr(cfg, section[0]) if section else cfg
        kind = type(getattr(record, field))
        try:
            setattr(record, field, kind(text))
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not a valid {kind.__name__}") from None
        applied.append(f"{name}={text}")
    return applied


def main(packed: dict, argv: list[str]) -> int:
    """Run the shipped script; returns its exit code (errors are one line on stderr, as pgolf's)."""
    try:
        cfg = from_plain(Config, packed)
        applied = apply_env(cfg, dict(os.environ))
        if argv and argv[0] == "--eval" and len(argv) == 2:
            return evaluate_artifact(Path(argv[1]), cfg)
        if argv:
            print("usage: train_gpt.py [--eval ARTIFACT]", file=sys.stderr)
            return 2
        return train_and_score(cfg, applied)
    except PgolfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return Interrupted.exit_code


def evaluate_artifact(path: Path, cfg: Config) -> int:
    """Score the artifact at `path` on the validation set; the last line printed is `val_bpb:<value>`."""
    started = time.time()
    setup = resolve_device("auto")
    model_config, state = load_artifact(path)
    scorer = Scorer.for_saved(cfg, model_config, setup)
    scores = scorer.score_weights(model_config, state, where=path)
    result, where = scores.static, scorer.scored_on
    print(f"eval {path}: {path.stat().st_size} bytes, {result.tokens} tokens, {result.bytes} bytes of text, "
          f"{where['eval_device']} {where['eval_dtype']}, {time.time() - started:.1f}s")
    _print_scores(scores, print)
    return 0


def _print_scores(scores: Scores, log: Callable[[str], None]) -> None:
    """The last two lines are the submission's score: with test-time training, the TTT one (after the static)."""
    if scores.ttt is not None:
        log(f"round trip without ttt: val_loss {scores.static.loss:.10f} val_bpb {scores.static.bpb:.10f}")
        log(f"ttt={scores.ttt.preset}: {scores.ttt.seconds:.1f}s")
    log(f"val_loss:{scores.final.loss:.10f}")
    log(f"val_bpb:{scores.final.bpb:.10f}")


def _logger(is_main: bool) -> Callable[[str], None]:
    """Print and append to logs/<RUN_ID>.txt on the main rank; silent elsewhere."""
    if not is_main:
        return lambda message: None
    path = Path("logs") / f"{os.environ.get('RUN_ID') or uuid.uuid4().hex[:8]}.txt"
    path.parent.mkdir(exist_ok=True)

    def log(message: str) -> None:
        print(message, flush=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(message + "\n")

    return log


def train_and_score(cfg: Config, applied: list[str]) -> int:
    """Train the packed config, export it to final_model.pgolf, read it back and score it."""
    job = start_training(cfg, "auto")
    setup, dist_info, val, model = job.setup, job.dist_info, job.scorer.val, job.model
    log = _logger(dist_info.is_main)
    log(f"device: {setup.description}" + (f", {dist_info.world_size} processes" if dist_info.enabled else ""))
    if applied:
        log(f"environment: {' '.join(applied)}")
    log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters; data: {cfg.data.dir} "
        f"({len(job.train_files)} train shards, {val.tokens.numel() - 1:,} val tokens)")
    result = train_model(cfg, model, job.batches, val.tokens, val.luts, setup, dist_info, NullMetrics(), log)
    if not dist_info.is_main:
        shutdown(dist_info)
        return 0
    if result.stop_reason in ("interrupted", "nan"):
        shutdown(dist_info)
        if result.stop_reason == "nan":
            raise TrainingError(result.error)
        raise Interrupted(f"interrupted after {result.steps} steps")
    model.load_state_dict(result.state_dict)
    _, scores = export_roundtrip(result.state_dict, model, dict(model.config), cfg, Path(ARTIFACT), job.scorer)
    model_bytes = Path(ARTIFACT).stat().st_size
    script = Path(sys.modules["__main__"].__file__)
    code_bytes = script.stat().st_size
    log(f"{ARTIFACT}: {model_bytes} bytes; code ({script.name}): {code_bytes} bytes; total: "
        f"{model_bytes + code_bytes} bytes")
    log(f"stopped: {result.stop_reason} after {result.steps} steps, {result.train_time_s:.1f}s")
    _print_scores(scores, log)
    shutdown(dist_info)
    return 0
