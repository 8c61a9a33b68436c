"""Typed config schema, Hydra composition and size parsing.

The dataclasses below are the single source of truth: schema, defaults and a
docstring under every field. `conf/` holds presets that state only what they
change. `compose()` validates overrides against the schema through Hydra and
hands back plain dataclasses, so nothing downstream sees a DictConfig. This is
the only module that imports hydra or omegaconf.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgolf.errors import ConfigError


@dataclass
class RunConfig:
    name: str = "run"
    """Short label appended to the run directory name."""
    root: str = "runs"
    """Folder that holds dated run directories and `latest`."""


@dataclass
class DataConfig:
    name: str = "builtin"
    """Label of the data set (shown in summaries)."""
    dir: str = "data/builtin"
    """Folder with the train and validation shards."""
    tokenizer: str = "data/builtin/tokenizer.model"
    """SentencePiece model that produced the shards (used for the byte LUTs)."""
    train_pattern: str = "*_train_*.bin"
    """Glob (inside `dir`) of the training shards."""
    val_pattern: str = "*_val_*.bin"
    """Glob (inside `dir`) of the validation shards."""
    vocab_size: int = 1024
    """Tokenizer size when `pgolf data prepare` trains one."""
    val_tokens: int = 0
    """Cap on validation tokens for the final score (0 = the whole split)."""


@dataclass
class ModelConfig:
    vocab_size: int = 1024
    """Vocabulary size; must equal the tokenizer's."""
    num_layers: int = 9
    """Transformer blocks (an even number gives a symmetric U-Net skip)."""
    model_dim: int = 512
    """Residual stream width."""
    num_heads: int = 8
    """Query heads."""
    num_kv_heads: int = 4
    """Key/value heads (grouped-query attention)."""
    mlp_mult: int = 2
    """MLP hidden width as a multiple of `model_dim`."""
    tie_embeddings: bool = True
    """Share the input embedding with the output head."""
    tied_embed_init_std: float = 0.005
    """Init std of the tied embedding."""
    rope_base: float = 10000.0
    """RoPE frequency base."""
    qk_gain_init: float = 1.5
    """Initial value of the learned per-head query gain."""


@dataclass
class TrainConfig:
    seq_len: int = 1024
    """Tokens per training sequence."""
    batch_tokens: int = 524288
    """Tokens per optimizer step (all micro-batches and ranks together)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step on each rank."""
    sampling: str = "stream"
    """Training batches: stream (shards in order, as the reference) or random (seeded windows at random positions)."""
    iterations: int = 20000
    """Maximum optimizer steps."""
    warmup_steps: int = 20
    """Steps run once to warm kernels/compile, after which model and optimizer state are restored."""
    lr_warmup_steps: int = 0
    """Linear learning-rate warmup steps from 0."""
    warmdown_steps: int = 1200
    """Linear learning-rate decay to 0 over the last steps (estimated from wallclock when capped)."""
    wallclock_s: float = 600.0
    """Stop training after this many seconds (0 = no cap)."""
    val_every: int = 1000
    """Validate every this many steps (0 = only at the end)."""
    val_tokens: int = 65536
    """Validation tokens used for the periodic checks during training (0 = all)."""
    log_every: int = 10
    """Write a metrics line every this many steps."""
    matrix_lr: float = 0.04
    """Muon learning rate for the 2-D block matrices."""
    embed_lr: float = 0.05
    """Adam learning rate for the (tied) embedding."""
    head_lr: float = 0.008
    """Adam learning rate for an untied output head."""
    scalar_lr: float = 0.04
    """Adam learning rate for vectors and scalars."""
    muon_momentum: float = 0.95
    """Muon momentum after warmup."""
    muon_momentum_start: float = 0.85
    """Muon momentum at step 0."""
    muon_momentum_warmup_steps: int = 500
    """Steps over which Muon momentum rises to `muon_momentum`."""
    muon_ns_steps: int = 5
    """Newton-Schulz iterations in Muon."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.95
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    compile: bool = False
    """torch.compile the model (CUDA only)."""


@dataclass
class RegConfig:
    weight_decay: float = 0.0
    """Decoupled decay of the Muon block matrices: p <- p * (1 - lr * wd)."""
    embed_weight_decay: float = 0.0
    """Decoupled decay of the embedding (and untied head)."""
    scalar_weight_decay: float = 0.0
    """Decoupled decay of vectors and scalars not listed in `no_decay`."""
    no_decay: list[str] = field(
        default_factory=lambda: ["q_gain", "attn_scale", "mlp_scale", "resid_mix", "skip_weights", "ln_scale"]
    )
    """Parameter-name fragments that never get decay (gains, scales, mixes, norms)."""
    decay_schedule: str = "constant"
    """How decay changes over training: constant, ramp (up in warmdown) or taper (down late)."""
    decay_schedule_factor: float = 1.0
    """Multiplier reached at the end of training by `ramp`/`taper` (e.g. 2.0 or 0.5)."""
    decay_schedule_start: float = 0.7
    """Fraction of training where `ramp`/`taper` begins."""
    l1: float = 0.0
    """L1 penalty coefficient on the block matrices."""
    l2: float = 0.0
    """L2 penalty coefficient on the block matrices (with `l1`: elastic net)."""
    z_loss: float = 0.0
    """z-loss coefficient: coef * mean(logsumexp(logits)^2)."""
    label_smoothing: float = 0.0
    """Label smoothing of the training cross-entropy."""
    qerr_penalty: float = 0.0
    """Quantization-error penalty lambda * sum(w^2 * delta^2 / 12) at the export bits."""
    sv_penalty: float = 0.0
    """Singular-value balance penalty coefficient."""
    softcap: float = 30.0
    """Logit softcap c in c*tanh(z/c) (0 = off)."""
    ln_scale: str = "none"
    """Scale of each block's normalized input: none, fixed (1/sqrt(layer+1)) or learned."""
    dropout: float = 0.0
    """Dropout on attention and MLP outputs during training."""
    drop_path: float = 0.0
    """Stochastic depth: probability of skipping a block's residual branch (max, deepest block)."""
    grad_clip: float = 0.0
    """Clip gradients to this global norm (0 = off)."""
    ema_decay: float = 0.0
    """EMA of weights per step (0 = off); EMA weights are saved and exported."""
    swa_start: float = 0.0
    """Fraction of training after which SWA averages weights (0 = off)."""
    swa_every: int = 50
    """Steps between SWA snapshots."""
    qat_bits: int = 0
    """Fake-quantize block matrices at this bit-width with a straight-through estimator (0 = off)."""
    qat_start: float = 0.85
    """Fraction of training after which QAT switches on."""
    prune_sparsity: float = 0.0
    """Target fraction of zeroed block-matrix weights reached by gradual magnitude pruning (0 = off)."""
    prune_start: float = 0.7
    """Fraction of training where gradual pruning begins."""
    early_stop_patience: int = 0
    """Stop after this many validations without BPB improvement (0 = off)."""
    gap_warn: float = 0.1
    """Warn when val BPB minus train BPB grows beyond this."""


@dataclass
class GroupBits:
    embed: int = 8
    """Token embedding (and untied head); 16 keeps any group as float."""
    attn_q: int = 0
    """Attention query projections (0 = export.bits)."""
    attn_k: int = 0
    """Attention key projections (0 = export.bits)."""
    attn_v: int = 0
    """Attention value projections (0 = export.bits)."""
    attn_out: int = 0
    """Attention output projections (0 = export.bits)."""
    mlp_in: int = 0
    """MLP input (fc) matrices (0 = export.bits)."""
    mlp_out: int = 0
    """MLP output (proj) matrices (0 = export.bits)."""
    other: int = 0
    """Any other quantized tensor (0 = export.bits)."""

    def for_group(self, group: str, default_bits: int) -> int:
        """Bits for a tensor group: its own value, or `default_bits` when 0."""
        return getattr(self, group) or default_bits


@dataclass
class ExportConfig:
    bits: int = 6
    """Default bit-width of quantized matrices (2..8)."""
    group_bits: GroupBits = field(default_factory=GroupBits)
    """Bit-width per tensor group; 0 means `bits`."""
    tensor_bits: dict[str, int] = field(default_factory=dict)
    """Bit-width per tensor by state-dict name (2..8, 16 = keep float); wins over group_bits and float_max_numel."""
    clip: str = "mse"
    """Clip strategy per row: max, percentile, sdclip (k * std) or mse (search)."""
    clip_percentile: float = 99.99984
    """Percentile of |w| per row for clip=percentile."""
    clip_k: float = 12.0
    """k for clip=sdclip."""
    scale_min: float = 0.0
    """Floor on every row's scale (the reference export uses 1/127)."""
    float_max_numel: int = 0
    """Tensors with at most this many elements stay float (0 = quantize every matrix; the reference uses 65,536)."""
    float_dtype: str = "float16"
    """Storage dtype of kept-float tensors (float16, bfloat16 or float32)."""
    prune: float = 0.0
    """Fraction of weights to prune (meaning set by `prune_kind`)."""
    prune_kind: str = "magnitude"
    """magnitude (per tensor), global, rows, cols, heads or selective (smallest nonzero quantized values)."""
    codec: str = "auto"
    """zlib, zstd, lzma, brotli, rans, or auto (smallest per tensor group)."""
    codec_level: int = -1
    """Compression level for zlib/zstd/lzma/brotli (-1 = each codec's maximum)."""
    shuffle: bool = False
    """Byte-shuffle scales before compressing."""
    code_bytes: int = 47642
    """Code bytes added to the artifact size when `code_files` is empty (default: the reference train_gpt.py)."""
    code_files: list[str] = field(default_factory=list)
    """Files whose summed sizes count as code instead of `code_bytes` (e.g. your own train_gpt.py)."""
    eval_stride: int = 0
    """Sliding-window stride for scoring (0 = non-overlapping windows)."""
    gptq: bool = False
    """Choose the levels of every linear layer by GPTQ (error feedback under calibration inputs), not rounding."""
    gptq_tokens: int = 32768
    """Training tokens run through the float model to measure each layer's inputs for GPTQ."""
    gptq_damp: float = 0.01
    """GPTQ dampening: this fraction of the mean Hessian diagonal is added to it."""


@dataclass
class BudgetConfig:
    max_bytes: str = "16MB"
    """Total byte budget (artifact + code); decimal units unless written MiB/KiB."""
    margin: str = "0"
    """Safety margin kept below `max_bytes`."""


@dataclass
class FitConfig:
    bits: list[int] = field(default_factory=lambda: [4, 5, 6, 7, 8])
    """Bit-widths tried for each non-embedding tensor group (and for single tensors when filling)."""
    embed_bits: list[int] = field(default_factory=lambda: [5, 6, 7, 8])
    """Bit-widths tried for the embedding group (it is the most sensitive per weight)."""
    clips: list[str] = field(default_factory=list)
    """Clip strategies tried (empty: the base export.clip)."""
    sdclip_ks: list[float] = field(default_factory=lambda: [10.0, 14.0, 20.0])
    """k values tried when fit.clips lists sdclip."""
    codecs: list[str] = field(default_factory=list)
    """Codecs tried (empty: the base export.codec, with auto searched as rans)."""
    max_prune: float = 0.3
    """Largest selective-pruning fraction the pruning fill may use (0 = no pruning)."""
    fill: float = 0.995
    """Pruning bisection stops once a candidate uses this share of the model-byte limit."""
    fill_candidates: int = 3
    """Proxy-frontier points above the budget that are pruned down to fit."""
    evals: int = 3
    """Fitting candidates evaluated in BPB, best proxy first (plus the uniform anchors)."""
    val_tokens: int = 8192
    """Validation tokens per search evaluation (0 = the whole configured set)."""
    fisher_tokens: int = 2048
    """Validation tokens for the Fisher sensitivity pass."""
    fisher_seq_len: int = 128
    """Sequence length of the Fisher pass (shorter: more per-sequence gradients per token)."""


@dataclass
class LauncherConfig:
    cluster: str = "local"
    """Where `pgolf sweep --launcher submitit` sends training cells: local (subprocesses here) or slurm."""
    partition: str = ""
    """Slurm partition (empty: the cluster's default)."""
    nodes: int = 1
    """Nodes per training cell."""
    gpus_per_node: int = 0
    """GPUs per node (one training process per GPU; 0 = one CPU process)."""
    cpus_per_task: int = 2
    """CPU cores per training process."""
    timeout_min: int = 60
    """Wall-time limit of one training cell's job, in minutes."""


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    seed: int = 1337
    """Random seed for init, data order and dropout."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""


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


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of a Config (for YAML/JSON output)."""
    return dataclasses.asdict(cfg)


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


def plain_yaml(data: dict[str, Any]) -> str:
    """YAML text of plain dicts and lists."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(data))


def load_yaml(path: Path) -> Config:
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as exc:
        raise ConfigError(f"cannot read config {path}: {_one_line(exc)}") from exc
    return from_dict(data)


# --------------------------------------------------------------------------- validation

_GROUPS = ("embed", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_out", "other")
_CODECS = ("auto", "zlib", "zstd", "lzma", "brotli", "rans")
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
    bad_codecs = [c for c in f.codecs if c not in _CODECS or c == "auto"]
    if bad_codecs:
        problems.append(f"fit.codecs must be among {', '.join(_CODECS[1:])}, got {bad_codecs}")
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
    need(e.scale_min >= 0, f"export.scale_min must be >= 0, got {e.scale_min}")
    need(e.code_bytes >= 0, f"export.code_bytes must be >= 0, got {e.code_bytes}")
    need(0 <= e.prune < 1, f"export.prune must be in [0, 1), got {e.prune}")
    need(e.prune_kind in ("magnitude", "global", "rows", "cols", "heads", "selective"),
         f"export.prune_kind must be magnitude, global, rows, cols, heads or selective, got {e.prune_kind!r}")
    need(e.codec in _CODECS, f"export.codec must be one of {', '.join(_CODECS)}, got {e.codec!r}")
    need(e.float_dtype in ("float16", "bfloat16", "float32"),
         f"export.float_dtype must be float16, bfloat16 or float32, got {e.float_dtype!r}")
    need(e.eval_stride >= 0, f"export.eval_stride must be >= 0, got {e.eval_stride}")
    need(e.gptq_tokens > 0, f"export.gptq_tokens must be > 0, got {e.gptq_tokens}")
    need(e.gptq_damp > 0, f"export.gptq_damp must be > 0, got {e.gptq_damp}")
    problems += fit_problems(cfg.fit)
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
