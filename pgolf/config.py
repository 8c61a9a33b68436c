"""Hydra composition, validation and size parsing over the typed schema (`schema.py`).

The dataclasses in `schema.py` are the single source of truth: schema, defaults
and a docstring under every field; they are re-exported here for the modules
that compose configs. `conf/` holds presets that state only what they change.
`compose()` validates overrides against the schema through Hydra and hands back
plain dataclasses, so nothing downstream sees a DictConfig. This is the only
module that imports hydra or omegaconf.
"""

from __future__ import annotations

import ast
import copy
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.errors import ConfigError
from pgolf.model.knobs import RECORD_KNOBS, knob_problems
from pgolf.schema import (  # noqa: F401  (re-exported: the schema as composition's callers name it)
    TTT_TARGETS,
    BudgetConfig,
    Config,
    DataConfig,
    ExportConfig,
    FitConfig,
    GroupBits,
    GroupClipK,
    LauncherConfig,
    ModelConfig,
    RegConfig,
    RunConfig,
    TrainConfig,
    TTTConfig,
    to_dict,
    ttt_rank_problem,
)

# --------------------------------------------------------------------------- sizes

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes in a size: "16MB" = 16,000,000 (decimal), "16MiB" = 16,777,216 (binary)."""
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        match = _SIZE_RE.match(str(text).replace("_", "").replace(",", ""))
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ConfigError(f"cannot parse size {text!r} (examples: 16MB, 15.5MB, 16MiB, 16000000)")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = value * _SIZE_UNITS[unit]
    if size != int(size):
        raise ConfigError(f"size {text!r} is not a whole number of bytes")
    return int(size)


# --------------------------------------------------------------------------- composition

def conf_dir() -> Path:
    """The `conf/` folder shipped beside the package (override with PGOLF_CONF)."""
    return Path(os.environ.get("PGOLF_CONF", Path(__file__).resolve().parent.parent / "conf"))


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each dataclass field, read from the source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = str(nxt.value.value)
    return docs


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="pgolf_schema", node=Config)


def _one_line(exc: BaseException) -> str:
    """Hydra/OmegaConf errors span lines and chain causes; keep the headline and the root reason."""
    chain = []
    while exc is not None:
        chain.append(str(exc).strip())
        exc = exc.__cause__
    lines = chain[0].splitlines() or ["unknown error"]
    parts = [lines[0].strip()]
    if "To append to your config" in chain[0]:
        parts.append("(no such key in the schema)")
    listing = chain[0].split("Config search path", 1)[0]
    options = [line.strip() for line in listing.split("Available options", 1)[-1].splitlines()[1:]
               if line.startswith("\t")] if "Available options" in chain[0] else []
    if options:
        parts.append(f"(available: {', '.join(options)})")
    root = chain[-1].splitlines()[0].strip() if len(chain) > 1 and chain[-1] else ""
    if root and root not in parts[0]:
        parts.append(f"- {root}")
    return " ".join(parts)


_OPEN_DICTS = ("export.tensor_bits",)
"""Dict fields keyed by data (tensor names), not schema: `key={name: value}` adds keys (Hydra's `++`)."""


def compose(overrides: list[str] | tuple[str, ...] = (), allow_sweep: bool = False) -> Config:
    """Compose conf/config.yaml with Hydra overrides into a validated Config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = list(overrides)
    if not allow_sweep:
        for item in overrides:
            key, _, value = item.partition("=")
            if "," in value and not value.strip().startswith(("[", "{")):
                raise ConfigError(f"override {item!r} is a sweep axis; use `pgolf sweep` for several values")
    overrides = [f"++{item}" if item.partition("=")[0] in _OPEN_DICTS else item for item in overrides]
    _register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        obj = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # Hydra and OmegaConf raise many types; all are config problems here
        raise ConfigError(f"bad config: {_one_line(exc)}") from exc
    finally:
        GlobalHydra.instance().clear()
    validate(obj)
    return obj


@dataclass
class SweepAxis:
    """One swept key and its values, as override strings (`reg.weight_decay` -> ["0", "0.04"])."""

    key: str
    """The dotted key or config group, without Hydra's +/++ prefix (the results column)."""
    values: list[str]
    """Override values in grid order, duplicates removed."""
    prefix: str = ""
    """Hydra's `+` or `++` when the override adds a key."""

    def override(self, value: str) -> str:
        return f"{self.prefix}{self.key}={value}"


def override_key(item: str) -> str:
    """The key (or group) an override sets: `++export.tensor_bits={a:7}` -> `export.tensor_bits`."""
    return item.lstrip("+~").partition("=")[0]


def parse_sweep(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[SweepAxis]]:
    """Split overrides into base overrides and sweep axes, expanded by Hydra's own override parser.

    `a=1,2`, `a=range(0,3)` and `a=choice(x,y)` are axes; `interval(...)` (a continuous range, for optimizers) and
    `glob(...)` are refused. An axis that expands to nothing and a key given twice are errors.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    base: list[str] = []
    axes: list[SweepAxis] = []
    seen: set[str] = set()
    for item in overrides:
        try:
            parsed = parser.parse_overrides([item])[0]
        except Exception as exc:
            raise ConfigError(f"bad override {item!r}: {_one_line(exc)}") from exc
        key = parsed.key_or_group
        if key in seen:
            raise ConfigError(f"{key} is given twice; give each key once (a sweep axis lists all its values)")
        seen.add(key)
        if not parsed.is_sweep_override():
            base.append(item)
            continue
        if parsed.is_interval_sweep():
            raise ConfigError(f"{item!r}: interval() is a continuous range for optimizing sweepers; a grid needs "
                              "listed values, e.g. a=0,0.5,1 or a=range(0,3)")
        if "glob(" in item:
            raise ConfigError(f"{item!r}: glob() is not supported in a grid; list the options, e.g. "
                              "model=tiny,baseline")
        try:
            values = list(dict.fromkeys(parsed.sweep_string_iterator()))
        except Exception as exc:
            raise ConfigError(f"bad sweep values in {item!r}: {_one_line(exc)}") from exc
        if not values:
            raise ConfigError(f"sweep axis {item!r} has no values")
        element = parsed.get_key_element()
        axes.append(SweepAxis(key=key, values=values, prefix=element[: len(element) - len(element.lstrip("+"))]))
    return base, axes


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from a saved dict (e.g. a run's config.yaml), validated by the schema."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), data)
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:
        raise ConfigError(f"bad saved config: {_one_line(exc)}") from exc
    validate(obj)
    return obj


def to_yaml(cfg: Config) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def load_plain_yaml(path: Path) -> dict[str, Any]:
    """A YAML file as plain dicts and lists (sweep files, sweep.yaml), or a one-line ConfigError."""
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:
        raise ConfigError(f"cannot read {path}: {_one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def read_params_file(kind: str, name: str) -> tuple[list[str], dict[str, Any]]:
    """(base overrides, params) of conf/KIND/NAME.yaml, as sweep and search files write them: `params` (key ->
    values) and `overrides` (a list), or the Optuna sweeper's `hydra.sweeper.params`."""
    path = conf_dir() / kind / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in (conf_dir() / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} file {path} (available: {', '.join(shipped) or 'none'})")
    data = load_plain_yaml(path)
    if "hydra" in data:
        data = {"params": ((data.get("hydra") or {}).get("sweeper") or {}).get("params"),
                "overrides": data.get("overrides")}
    unknown = set(data) - {"params", "overrides"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)} (expected params and overrides)")
    params, overrides = data.get("params") or {}, data.get("overrides") or []
    if not isinstance(params, dict) or not isinstance(overrides, list):
        raise ConfigError(f"{path}: params must map keys to {kind} values and overrides must be a list")
    return [str(o) for o in overrides], params


def expand_named_file(overrides: list[str], kind: str, load: Callable[[str], tuple[list[str], list[str]]]
                      ) -> list[str]:
    """Replace `KIND=NAME` by `load(NAME)`'s overrides; a key also given on the command line keeps that value."""
    named = [o for o in overrides if o.startswith(f"{kind}=")]
    rest = [o for o in overrides if not o.startswith(f"{kind}=")]
    if len(named) > 1:
        raise ConfigError(f"give {kind}=NAME once")
    if not named:
        return rest
    file_base, file_params = load(named[0].partition("=")[2])
    cli_keys = {override_key(o) for o in rest}
    return [o for o in file_base + file_params if override_key(o) not in cli_keys] + rest


def plain_yaml(data: dict[str, Any]) -> str:
    """YAML text of plain dicts and lists."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(data))


def merge_dotted(cfg: Config, overrides: list[str]) -> Config:
    """Overrides on top of a saved config: a preset (`ttt=records`) or a top-level value (`seed=3`) replaces that
    whole part as conf/ composes it, then `section.key=value` overrides apply."""
    presets = [item for item in overrides if "." not in override_key(item)]
    if presets:
        chosen = compose(presets)
        cfg = copy.deepcopy(cfg)
        for item in presets:
            setattr(cfg, override_key(item), getattr(chosen, override_key(item)))
        overrides = [item for item in overrides if item not in presets]
    if not overrides:
        return cfg
    from omegaconf import OmegaConf

    try:
        merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
        data = OmegaConf.to_container(merged)
    except Exception as exc:
        raise ConfigError(f"bad override: {_one_line(exc)}") from exc
    return from_dict(data)


def load_yaml(path: Path) -> Config:
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as exc:
        raise ConfigError(f"cannot read config {path}: {_one_line(exc)}") from exc
    return from_dict(data)


# --------------------------------------------------------------------------- validation

_GROUPS = ("embed", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_out", "other")
_CODECS = ("auto", "zlib", "zstd", "lzma", "brotli", "rans", "ctx")
_CLIPS = ("max", "percentile", "sdclip", "mse")


def fit_problems(f: FitConfig) -> list[str]:
    """Every problem of a fit search space, each naming its key (an empty space is one)."""
    problems = []
    for name in ("bits", "embed_bits"):
        values = getattr(f, name)
        if not values:
            problems.append(f"fit.{name} is empty: the search space has no candidates")
        bad = [b for b in values if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8]
        if bad:
            problems.append(f"fit.{name} values must be in 2..8, got {bad}")
    bad_clips = [c for c in f.clips if c not in _CLIPS]
    if bad_clips:
        problems.append(f"fit.clips must be among {', '.join(_CLIPS)}, got {bad_clips}")
    if "sdclip" in f.clips and not f.sdclip_ks:
        problems.append("fit.clips has sdclip but fit.sdclip_ks is empty")
    if any(not k > 0 for k in f.sdclip_ks):
        problems.append(f"fit.sdclip_ks must all be > 0, got {f.sdclip_ks}")
    if any(not isinstance(g, bool) for g in f.gptq):
        problems.append(f"fit.gptq must be a list of true/false, got {f.gptq}")
    bad_dtypes = [d for d in f.control_dtypes if d not in ("float32", "float16")]
    if bad_dtypes:
        problems.append(f"fit.control_dtypes must be among float32, float16, got {bad_dtypes}")
    bad_codecs = [c for c in f.codecs if c not in _CODECS or c == "auto"]
    if bad_codecs:
        problems.append(f"fit.codecs must be among {', '.join(_CODECS[1:])}, got {bad_codecs}")
    if not f.lqer_ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in f.lqer_ranks):
        problems.append(f"fit.lqer_ranks must be a non-empty list of ranks >= 0 ([0] = off), got {f.lqer_ranks}")
    if not 0 <= f.max_prune < 1:
        problems.append(f"fit.max_prune must be in [0, 1), got {f.max_prune}")
    if not 0 < f.fill <= 1:
        problems.append(f"fit.fill must be in (0, 1], got {f.fill}")
    for name, low in (("fill_candidates", 0), ("evals", 1), ("val_tokens", 0), ("fisher_tokens", 1),
                      ("fisher_seq_len", 1)):
        value = getattr(f, name)
        if value < low:
            problems.append(f"fit.{name} must be >= {low}, got {value}")
    return problems


def ttt_problems(t: TTTConfig, model_dim: int) -> list[str]:
    """Every problem of a test-time training config for a model of width `model_dim`, each naming its `ttt.` key
    (none when ttt.name is none)."""
    if t.name == "none":
        return []
    problems = [ttt_rank_problem(t, model_dim)] if ttt_rank_problem(t, model_dim) else []
    if t.rank == 0 and t.phases == 0:
        problems.append(f"ttt={t.name} trains nothing: ttt.rank and ttt.phases are both 0 (use ttt=none)")
    for name, low in (("rank", 0), ("chunk", 1), ("context", 1), ("batch_docs", 1), ("grad_steps", 1),
                      ("phases", 0), ("prefix_docs", 0), ("global_epochs", 1), ("global_chunk_tokens", 1),
                      ("global_batch_seqs", 1)):
        value = getattr(t, name)
        if value < low:
            problems.append(f"ttt.{name} must be >= {low}, got {value}")
    if t.context < t.chunk:
        problems.append(f"ttt.context ({t.context}) must hold at least one chunk (ttt.chunk {t.chunk})")
    if t.phases and t.prefix_docs < t.phases:
        problems.append(f"ttt.phases ({t.phases}) needs ttt.prefix_docs >= ttt.phases, got {t.prefix_docs}")
    for name in ("alpha", "lr", "weight_decay", "global_lr", "global_momentum", "global_grad_clip"):
        value = getattr(t, name)
        if not 0 <= value < float("inf"):
            problems.append(f"ttt.{name} must be finite and >= 0, got {value}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(t, name) < 1:
            problems.append(f"ttt.{name} must be in [0, 1), got {getattr(t, name)}")
    bad = [x for x in t.targets if x not in TTT_TARGETS]
    if bad:
        problems.append(f"ttt.targets must be among {', '.join(TTT_TARGETS)}, got {bad}")
    if t.rank and not t.targets:
        problems.append(f"ttt.rank is {t.rank} but ttt.targets is empty")
    return problems


def muon_coefficient_problems(t: TrainConfig) -> list[str]:
    """Problems of `train.muon_coefficients`: a known name, or [a, b, c] lists, one for all Newton-Schulz
    iterations or one per iteration."""
    spec, names = t.muon_coefficients, ("standard", "polar_express")  # train/muon.py MUON_COEFFICIENTS
    if isinstance(spec, str):
        return [] if spec in names else [f"train.muon_coefficients must be standard, polar_express or a list of "
                                         f"[a, b, c], got {spec!r}"]
    if not isinstance(spec, (list, tuple)) or not spec:
        return [f"train.muon_coefficients must be standard, polar_express or a non-empty list of [a, b, c], "
                f"got {spec!r}"]
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < float("inf")  # nan fails too

    bad = [abc for abc in spec if not (isinstance(abc, (list, tuple)) and len(abc) == 3 and all(map(number, abc)))]
    if bad:
        return [f"train.muon_coefficients entries must be [a, b, c] of 3 finite numbers, got {bad}"]
    if len(spec) not in (1, t.muon_ns_steps):
        return [f"train.muon_coefficients lists {len(spec)} [a, b, c] but train.muon_ns_steps is {t.muon_ns_steps}: "
                "give one per iteration, or one for all"]
    return []


def check_fit_config(f: FitConfig) -> None:
    """ConfigError listing every problem of a fit search space (also for hand-built configs)."""
    problems = fit_problems(f)
    if problems:
        raise ConfigError("; ".join(problems))


def validate(cfg: Config) -> None:
    """Collect every problem in the config and report them together, naming each key."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    m, t, r, e = cfg.model, cfg.train, cfg.reg, cfg.export
    need(m.vocab_size > 0, f"model.vocab_size must be > 0, got {m.vocab_size}")
    need(m.num_layers > 0, f"model.num_layers must be > 0, got {m.num_layers}")
    need(m.num_heads > 0 and m.model_dim % m.num_heads == 0,
         f"model.model_dim ({m.model_dim}) must be divisible by model.num_heads ({m.num_heads})")
    need(m.num_kv_heads > 0 and m.num_heads % m.num_kv_heads == 0,
         f"model.num_heads ({m.num_heads}) must be divisible by model.num_kv_heads ({m.num_kv_heads})")
    need(m.num_heads > 0 and (m.model_dim // m.num_heads) % 2 == 0,
         "model.model_dim / model.num_heads must be even (RoPE)")
    if m.num_layers > 0:
        problems += knob_problems({key: getattr(m, key) for key in RECORD_KNOBS}, m.num_layers, m.model_dim,
                                  m.num_heads)
    need(t.seq_len > 0, f"train.seq_len must be > 0, got {t.seq_len}")
    need(t.grad_accum > 0, f"train.grad_accum must be > 0, got {t.grad_accum}")
    need(t.batch_tokens >= t.seq_len * t.grad_accum,
         f"train.batch_tokens ({t.batch_tokens}) must hold at least one sequence per micro-batch")
    need(t.iterations >= 0, f"train.iterations must be >= 0, got {t.iterations}")
    need(t.wallclock_s >= 0, f"train.wallclock_s must be >= 0, got {t.wallclock_s}")
    need(t.log_every >= 1, f"train.log_every must be >= 1, got {t.log_every}")
    need(t.val_every >= 0, f"train.val_every must be >= 0, got {t.val_every}")
    need(t.sampling in ("stream", "random"), f"train.sampling must be stream or random, got {t.sampling!r}")
    for name in ("matrix_lr", "embed_lr", "head_lr", "scalar_lr", "adam_eps"):
        value = getattr(t, name)
        need(0 <= value < float("inf"), f"train.{name} must be finite and >= 0, got {value}")
    for name in ("min_lr", "warmdown_frac"):
        need(0 <= getattr(t, name) <= 1, f"train.{name} must be in [0, 1], got {getattr(t, name)}")
    problems += muon_coefficient_problems(t)
    for name in ("weight_decay", "embed_weight_decay", "scalar_weight_decay", "l1", "l2", "z_loss",
                 "qerr_penalty", "sv_penalty", "softcap", "grad_clip", "decay_schedule_factor"):
        value = getattr(r, name)
        need(value >= 0, f"reg.{name} must be >= 0, got {value}")
    for name in ("label_smoothing", "dropout", "drop_path", "prune_sparsity"):
        value = getattr(r, name)
        need(0 <= value < 1, f"reg.{name} must be in [0, 1), got {value}")
    for name in ("decay_schedule_start", "swa_start", "qat_start", "prune_start"):
        value = getattr(r, name)
        need(0 <= value <= 1, f"reg.{name} must be in [0, 1], got {value}")
    need(0 <= r.ema_decay < 1, f"reg.ema_decay must be in [0, 1), got {r.ema_decay}")
    need(not (r.ema_decay > 0 and r.swa_start > 0), "reg.ema_decay and reg.swa_start are both set; choose EMA or SWA")
    need(r.swa_every >= 1, f"reg.swa_every must be >= 1, got {r.swa_every}")
    need(r.decay_schedule in ("constant", "ramp", "taper"),
         f"reg.decay_schedule must be constant, ramp or taper, got {r.decay_schedule!r}")
    need(r.ln_scale in ("none", "fixed", "learned"),
         f"reg.ln_scale must be none, fixed or learned, got {r.ln_scale!r}")
    need(r.qat_bits == 0 or 2 <= r.qat_bits <= 8, f"reg.qat_bits must be 0 (off) or in 2..8, got {r.qat_bits}")
    need(r.early_stop_patience >= 0, f"reg.early_stop_patience must be >= 0, got {r.early_stop_patience}")
    need(2 <= e.bits <= 8, f"export.bits must be in 2..8, got {e.bits}")
    for group in _GROUPS:
        bits = getattr(e.group_bits, group)
        need(bits in (0, 16) or 2 <= bits <= 8,
             f"export.group_bits.{group} must be 0 (= export.bits), 2..8, or 16 (keep float), got {bits}")
    for name, bits in e.tensor_bits.items():
        need(bits == 16 or 2 <= bits <= 8,
             f"export.tensor_bits[{name}] must be 2..8, or 16 (keep float), got {bits}")
    need(e.clip in _CLIPS,
         f"export.clip must be max, percentile, sdclip or mse, got {e.clip!r}")
    need(0 < e.clip_percentile <= 100, f"export.clip_percentile must be in (0, 100], got {e.clip_percentile}")
    need(e.clip_k > 0, f"export.clip_k must be > 0, got {e.clip_k}")
    for group in _GROUPS:
        k = getattr(e.group_clip_k, group)
        need(k >= 0, f"export.group_clip_k.{group} must be >= 0 (0 = export.clip_k), got {k}")
    need(e.scale_min >= 0, f"export.scale_min must be >= 0, got {e.scale_min}")
    need(e.code_bytes >= -1, f"export.code_bytes must be >= 0, or -1 (measured), got {e.code_bytes}")
    need(0 <= e.prune < 1, f"export.prune must be in [0, 1), got {e.prune}")
    need(e.prune_kind in ("magnitude", "global", "rows", "cols", "heads", "selective"),
         f"export.prune_kind must be magnitude, global, rows, cols, heads or selective, got {e.prune_kind!r}")
    need(e.codec in _CODECS, f"export.codec must be one of {', '.join(_CODECS)}, got {e.codec!r}")
    need(e.float_dtype in ("float16", "bfloat16", "float32"),
         f"export.float_dtype must be float16, bfloat16 or float32, got {e.float_dtype!r}")
    need(e.eval_stride >= 0, f"export.eval_stride must be >= 0, got {e.eval_stride}")
    need(e.gptq_tokens > 0, f"export.gptq_tokens must be > 0, got {e.gptq_tokens}")
    need(e.gptq_damp > 0, f"export.gptq_damp must be > 0, got {e.gptq_damp}")
    need(e.lqer_rank >= 0, f"export.lqer_rank must be >= 0 (0 = off), got {e.lqer_rank}")
    need(2 <= e.lqer_bits <= 8, f"export.lqer_bits must be in 2..8, got {e.lqer_bits}")
    need(e.lqer_group >= 0, f"export.lqer_group must be >= 0 (0 = per row), got {e.lqer_group}")
    need(e.lqer_top_k >= 1, f"export.lqer_top_k must be >= 1, got {e.lqer_top_k}")
    if e.lqer_rank > 0 and m.num_heads > 0 and m.model_dim % m.num_heads == 0:  # checked before training, not after
        smallest = min(m.model_dim, m.num_kv_heads * (m.model_dim // m.num_heads))
        need(e.lqer_rank <= smallest, f"export.lqer_rank ({e.lqer_rank}) is above the smaller dimension of the "
                                      f"model's smallest matrix ({smallest}: the k/v projections)")
        need(not e.lqer_group or m.model_dim % e.lqer_group == 0,
             f"export.lqer_group ({e.lqer_group}) does not divide the rows LQER corrects (model.model_dim "
             f"{m.model_dim} values)")
    problems += fit_problems(cfg.fit)
    problems += ttt_problems(cfg.ttt, m.model_dim)
    need(cfg.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {cfg.device!r}")
    lc = cfg.launcher
    need(lc.cluster in ("local", "slurm"), f"launcher.cluster must be local or slurm, got {lc.cluster!r}")
    for name in ("nodes", "cpus_per_task", "timeout_min"):
        need(getattr(lc, name) >= 1, f"launcher.{name} must be >= 1, got {getattr(lc, name)}")
    need(lc.gpus_per_node >= 0, f"launcher.gpus_per_node must be >= 0, got {lc.gpus_per_node}")
    for name in ("max_bytes", "margin"):
        try:
            parse_size(getattr(cfg.budget, name))
        except ConfigError as exc:
            problems.append(f"budget.{name}: {exc}")
    if problems:
        raise ConfigError("; ".join(problems))
