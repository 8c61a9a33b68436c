"""What a path on the command line means (a run directory, an artifact, a checkpoint) and which config
applies to it: a run directory keeps its own data, model, training and regularizer sections.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pgolf import config as C
from pgolf.errors import ArtifactError
from pgolf.export.artifact import load_artifact
from pgolf.jobs.float_checkpoint import load_checkpoint
from pgolf.jobs.layout import ARTIFACT_SUFFIX, ARTIFACTS, CONFIG, FLOAT_WEIGHTS, artifacts_of, float_weights, is_run_dir


def load_any(path: Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    """(model_config, float state dict, kind) from an artifact, a checkpoint or a run directory.

    A run directory means its newest artifact, or its model.safetensors when it has none.
    """
    path = Path(path)
    if path.is_dir():
        artifacts = artifacts_of(path)
        if artifacts:
            path = artifacts[-1]
        elif float_weights(path).is_file():
            path = float_weights(path)
        else:
            raise ArtifactError(f"{path}: a folder without {ARTIFACTS}/*{ARTIFACT_SUFFIX} or {FLOAT_WEIGHTS}")
    if not path.exists():
        raise ArtifactError(f"{path}: no such file")
    if path.suffix == ARTIFACT_SUFFIX:
        config, state = load_artifact(path)
        return config, state, f"artifact {path}"
    config, state = load_checkpoint(path)
    return config, state, f"checkpoint {path}"


_RUN_SECTIONS = ("data", "model", "train", "reg")
"""What a run directory's own config decides for export, eval and fit-budget unless a preset replaces it."""


def config_for_source(source: Path, overrides: list[str]) -> C.Config:
    """Compose `overrides`; for a run directory, its saved data, model, train and reg sections and seed apply (with
    the overrides' `section.key=value` on top) unless a preset (`data=...`) replaces a section.

    So `pgolf export runs/latest export.bits=5` scores on the data the run was trained on, and the artifact's
    record and code bytes are those of the config that trained it.
    """
    cfg = C.compose(overrides)
    if is_run_dir(source):
        saved = C.load_yaml(Path(source) / CONFIG)
        keys = {C.override_key(item) for item in overrides}
        dotted = []
        for section in _RUN_SECTIONS:
            if section not in keys:
                setattr(cfg, section, getattr(saved, section))
                dotted += [item for item in overrides if C.override_key(item).startswith(f"{section}.")]
        if "seed" not in keys:
            cfg.seed = saved.seed
        cfg = C.merge_dotted(cfg, dotted)
    return cfg
