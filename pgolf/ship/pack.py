"""`pgolf pack`: a records folder the challenge can run, with byte totals measured on the files that ship.

The folder holds what the challenge's records folders hold: `train_gpt.py`
(bundle.py: pgolf's own modules for the packed config, self-contained),
`final_model.pgolf`, `submission.json`, `requirements.txt`, `README.md` and
the train logs (`train_seed<seed>.log`), each ending with the lines that name the artifact it
ships, its bytes and its score (the training printed its own export's; the shipped one may be later).

Where things come from:
- SOURCE is an artifact, a run directory (its newest artifact, e.g.
  fit-budget's choice) or a sweep cell; a cell brings its sibling cells that
  differ only in the seed, each with the artifact of the same name.
- An artifact's config and score are read from its record (`<artifact>.json`,
  written beside it by train, export and fit-budget). Without one, the config
  is the run's (or the overrides') and the artifact is scored now, on this
  machine; the README says which.
- OVERRIDES (`key=value`) change the packed config on top of the record,
  e.g. `data.dir=...` for where the challenge machine keeps the shards.

Checks before anything is written: the artifact decodes, its model is what
the packed config builds, its codecs are ones the packed export makes (so
the script's requirements can read it), every seed's total (artifact + the
script) is within the budget (exit 3 otherwise). The folder is written into
a staging folder and renamed into place, so DIR is never half-written; an
existing non-empty DIR is replaced only with `--force`.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pgolf import config as C
from pgolf.atomic import atomic_write_bytes, atomic_write_json
from pgolf.bundle.graph import PACKED_SECTIONS, changed_fields, packed_config, requirements
from pgolf.bundle.script import WRAPS, script
from pgolf.errors import ArtifactError, BudgetError, ConfigError, UsageError
from pgolf.export.artifact import load_artifact
from pgolf.export.coding.codecs import CODECS
from pgolf.export.container import read_container
from pgolf.jobs.layout import (
    ARTIFACT_SUFFIX,
    ARTIFACTS,
    CONFIG,
    TRAIN_LOG,
    artifacts_of,
    is_run_dir,
    record_path,
    run_dir_of,
)
from pgolf.jobs.models import build_model
from pgolf.jobs.scorer import Scorer
from pgolf.progress import ProgressFn, no_progress
from pgolf.runtime.device import resolve_device

ARTIFACT_NAME = "final_model.pgolf"


@dataclass
class Shipped:
    """One seed's artifact, the config that made it, and its score."""

    artifact: Path
    run_dir: Path | None
    cfg: C.Config
    val_bpb: float
    val_loss: float
    scored: str
    """Where the score comes from: the artifact's record, or scored by pack on this machine."""

    @property
    def artifact_bytes(self) -> int:
        return self.artifact.stat().st_size


def _newest_artifact(run_dir: Path) -> Path:
    artifacts = artifacts_of(run_dir)
    if not artifacts:
        raise ArtifactError(f"{run_dir}: no {ARTIFACTS}/*{ARTIFACT_SUFFIX} to pack (train, export or fit-budget "
                            "first)")
    return artifacts[-1]


def _seed_siblings(run_dir: Path) -> list[Path]:
    """A sweep cell's sibling cells that differ from it only in the seed (itself first); just `run_dir` otherwise."""
    if run_dir.parent.name != "cells":
        return [run_dir]
    mine = C.to_dict(C.load_yaml(run_dir / CONFIG))
    out = [run_dir]
    for other in sorted(run_dir.parent.iterdir()):
        if other == run_dir or not is_run_dir(other):
            continue
        theirs = C.to_dict(C.load_yaml(other / CONFIG))
        if {k: v for k, v in theirs.items() if k not in ("seed", "run")} == \
                {k: v for k, v in mine.items() if k not in ("seed", "run")}:
            out.append(other)
    return out


def _shipped(artifact: Path, overrides: list[str], setup, progress: ProgressFn) -> Shipped:
    """`artifact` with the config and score of its record, or (no record) its run's config and a score made now."""
    run_dir = run_dir_of(artifact.resolve())
    record = record_path(artifact)
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            recorded = C.from_dict(data["config"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{record}: not a readable artifact record ({exc}); remove it to score the artifact "
                                "anew") from None
        cfg = C.merge_dotted(recorded, overrides)
        kind = "ttt" if data.get("ttt") else "roundtrip"  # with test-time training, its score is the submission's
        ttt = f", ttt={data['ttt']}" if data.get("ttt") else ""
        return Shipped(artifact, run_dir, cfg, data[f"val_bpb_{kind}"], data[f"val_loss_{kind}"],
                       f"recorded ({data.get('eval_device', '?')} {data.get('eval_dtype', '?')}{ttt})")
    cfg = C.merge_dotted(C.load_yaml(run_dir / CONFIG), overrides) if run_dir else C.compose(overrides)
    model_config, state = load_artifact(artifact)
    scorer = Scorer.for_saved(cfg, model_config, setup, progress)
    result = scorer.score_weights(model_config, state, where=artifact).final
    where = scorer.scored_on
    ttt = f", ttt={cfg.ttt.name}" if scorer.uses_ttt else ""
    return Shipped(artifact, run_dir, cfg, result.bpb, result.loss,
                   f"scored by pack ({where['eval_device']} {where['eval_dtype']}{ttt}, no record beside the artifact)")


def resolve_sources(source: Path, overrides: list[str], progress: ProgressFn = no_progress) -> list[Shipped]:
    """The artifacts to ship: SOURCE's first, then its seed siblings (a sweep cell)."""
    source = Path(source)
    if source.is_dir():
        runs = _seed_siblings(source)
        name = _newest_artifact(source).name
        artifacts = []
        for run in runs:
            path = run / ARTIFACTS / name
            if not path.is_file():
                raise ArtifactError(f"{run}: no artifacts/{name}, the artifact packed from {source}")
            artifacts.append(path)
    elif source.is_file():
        if source.suffix != ARTIFACT_SUFFIX:
            raise ArtifactError(f"{source}: not a {ARTIFACT_SUFFIX} artifact (give an artifact or a run directory)")
        artifacts = [source]
    else:
        raise ArtifactError(f"{source}: no such artifact or run directory")
    setup = resolve_device("auto")
    return [_shipped(a, overrides, setup, progress) for a in artifacts]


def _check_buildable(item: Shipped) -> set[str]:
    """The artifact's codecs, after checking the packed config builds its model and makes those codecs."""
    header, _ = read_container(item.artifact)
    model_config = header.get("model_config") or {}
    with torch.device("meta"):
        expected = dict(build_model(item.cfg).config)
    diff = sorted(k for k in set(expected) | set(model_config) if expected.get(k) != model_config.get(k))
    if diff:
        raise ArtifactError(f"{item.artifact}: its model ({', '.join(f'{k}={model_config.get(k)}' for k in diff)}) is "
                            f"not what the packed config builds ({', '.join(f'{k}={expected.get(k)}' for k in diff)})")
    used = {s["codec"] for record in header["tensors"] for s in record["streams"].values()}
    makes = set(CODECS) if item.cfg.export.codec == "auto" else {item.cfg.export.codec}
    if used - makes:
        raise ArtifactError(f"{item.artifact}: uses codec {', '.join(sorted(used - makes))}, which the packed export "
                            f"(export.codec={item.cfg.export.codec}) never makes; pack it with that export config")
    return used


def _same_config(items: list[Shipped]) -> None:
    first = {k: v for k, v in packed_config(items[0].cfg).items() if k != "seed"}
    for item in items[1:]:
        if {k: v for k, v in packed_config(item.cfg).items() if k != "seed"} != first:
            raise ConfigError(f"{item.artifact}: its config differs from {items[0].artifact}'s beyond the seed")


def pack(source: Path, out: Path, overrides: list[str], max_bytes: str | None = None, name: str = "",
         author: str = "", github_id: str = "", blurb: str = "", wrap: str = "lzma", force: bool = False,
         command: str = "", progress: ProgressFn = no_progress) -> dict:
    """Write the records folder for SOURCE into `out`; returns the submission (also submission.json)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UsageError(f"{out} exists and is not empty; pass --force to replace it")
    if wrap not in WRAPS:
        raise UsageError(f"--wrap must be one of {', '.join(WRAPS)}, got {wrap!r}")
    items = resolve_sources(source, overrides, progress)
    _same_config(items)
    codecs_used = set().union(*(_check_buildable(item) for item in items))
    cfg = items[0].cfg
    budget = C.parse_size(max_bytes if max_bytes is not None else cfg.budget.max_bytes)
    shipped = script(cfg, wrap)
    code = len(shipped)
    for item in items:
        if item.artifact_bytes + code > budget:
            raise BudgetError(f"{item.artifact}: {item.artifact_bytes:,} + {code:,} code bytes = "
                              f"{item.artifact_bytes + code:,} is over the budget of {budget:,} bytes")
    submission = _submission(items, code, name or cfg.run.name, author, github_id, blurb)
    files = {
        "train_gpt.py": shipped,
        ARTIFACT_NAME: items[0].artifact.read_bytes(),
        "requirements.txt": "".join(f"{line}\n" for line in requirements(cfg, codecs_used)).encode(),
        "README.md": _readme(items, submission, budget, wrap, command).encode(),
    }
    for item in items:
        log = item.run_dir / TRAIN_LOG if item.run_dir else None
        if log is not None and log.is_file():
            files[f"train_seed{item.cfg.seed}.log"] = log.read_bytes() + _shipped_lines(item, code).encode()
    _write_folder(out, files, submission, force)
    return {**submission, "out": str(out), "files": sorted([*files, "submission.json"]), "budget": budget,
            "headroom_bytes": budget - submission["bytes_total"], "wrap": wrap}


def _shipped_lines(item: Shipped, code: int) -> str:
    """What a seed's log ends with: the artifact it ships, its bytes and its score, in the lines records print.

    The training log printed the training's own export; the shipped artifact may be a later one (an export at
    other settings, fit-budget's choice). Without these lines the log's last score and bytes would not be the
    submission's, and a reader (or `pgolf audit`) would find the folder contradicting itself.
    """
    where = f"{ARTIFACTS}/{item.artifact.name}"  # a log ships only from a run directory
    total = item.artifact_bytes + code
    return (f"pgolf pack: seed {item.cfg.seed} ships {where}, {item.scored}\n"
            f"Serialized model {where}: {item.artifact_bytes} bytes\n"
            f"Code size train_gpt.py: {code} bytes\n"
            f"Total submission size: {total} bytes\n"
            f"shipped val_loss:{item.val_loss:.8f} val_bpb:{item.val_bpb:.8f}\n")


def _submission(items: list[Shipped], code: int, name: str, author: str, github_id: str, blurb: str) -> dict:
    first = items[0]
    sub = {
        "author": author, "github_id": github_id, "name": name, "blurb": blurb,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "val_loss": statistics.fmean(i.val_loss for i in items),
        "val_bpb": statistics.fmean(i.val_bpb for i in items),
        "bytes_total": first.artifact_bytes + code, "bytes_code": code,
    }
    if len(items) > 1:
        sub["val_bpb_std"] = statistics.stdev(i.val_bpb for i in items)
        sub["seeds"] = [i.cfg.seed for i in items]
        sub["seed_results"] = [{"seed": i.cfg.seed, "val_bpb": i.val_bpb, "val_loss": i.val_loss,
                                "artifact_bytes": i.artifact_bytes} for i in items]
    return sub


def _readme(items: list[Shipped], sub: dict, budget: int, wrap: str, command: str) -> str:
    cfg = items[0].cfg
    code = sub["bytes_code"]
    rows = "\n".join(f"| {i.cfg.seed} | {i.val_bpb:.8f} | {i.val_loss:.8f} | {i.artifact_bytes:,} | {code:,} | "
                     f"{i.artifact_bytes + code:,} | {budget - i.artifact_bytes - code:,} | {i.scored} |"
                     for i in items)
    mean = (f"\nMean val_bpb over {len(items)} seeds: {sub['val_bpb']:.8f} (std {sub['val_bpb_std']:.8f}).\n"
            if len(items) > 1 else "")
    overrides = " ".join(reproduce_overrides(cfg))
    return f"""# {sub['name']}

{sub['blurb']}

## Results

| seed | val_bpb | val_loss | artifact bytes | code bytes | total | headroom to {budget:,} | score |
|---:|---:|---:|---:|---:|---:|---:|---|
{rows}
{mean}
`final_model.pgolf` is seed {cfg.seed}'s artifact. Code bytes are the size of `train_gpt.py` as it ships
({'lzma + base85 self-extracting wrapper' if wrap == 'lzma' else 'readable source'}).

## Reproduce

```
pip install -r requirements.txt                      # plus torch and numpy
torchrun --standalone --nproc_per_node=8 train_gpt.py # train, export final_model.pgolf, score it
python train_gpt.py --eval final_model.pgolf          # score the artifact: the last line is val_bpb:<value>
```

`DATA_PATH`, `TOKENIZER_PATH`, `ITERATIONS`, `MAX_WALLCLOCK_SECONDS`, `TRAIN_BATCH_TOKENS`, `TRAIN_SEQ_LEN`,
`SEED`, `VAL_TOKENS` and `VAL_PATTERN` override the packed config. With pgolf, the same config is
`pgolf train {overrides}`, and this folder was written by
`{command or 'pgolf pack'}`.

## Resolved config

```yaml
{C.to_yaml(cfg).rstrip()}
```
"""


def reproduce_overrides(cfg: C.Config) -> list[str]:
    """`pgolf train` overrides that compose `cfg`'s packed sections from pgolf's own defaults (conf/)."""
    changed = changed_fields(cfg, C.compose([]))
    return _flat({key: changed[key] for key in PACKED_SECTIONS if key in changed})


def _flat(values: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and key != "tensor_bits":
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={_hydra_value(value)}")
    return out


def _hydra_value(value) -> str:
    """A value in Hydra's override grammar: strings quoted unless plain words or numbers."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) else "'" + value.replace("'", "\\'") + "'"
    return repr(value)


def _write_folder(out: Path, files: dict[str, bytes], submission: dict, force: bool) -> None:
    """Write every file into a staging folder beside `out`, then swap it in (the old folder removed last)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        atomic_write_json(staging / "submission.json", submission)
        os.chmod(staging, 0o755)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        staging.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

