"""The typed config schema: dataclasses with the defaults and a docstring under every field.

The single source of truth for what a config holds. It imports nothing but the
standard library, so the script `pgolf pack` ships builds its config from here
without Hydra; composition, overrides and validation live in `config.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
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
    """Tokenizer of the shards (for the byte LUTs): a SentencePiece model, or the pure-byte JSON (byte260)."""
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
    mlp_leaky_slope: float = 0.0
    """MLP activation LeakyReLU(slope)^2; 0 = relu^2 (the baseline)."""
    rope_dims: int = 0
    """Rotate only the first `rope_dims` dims of each head (even, <= head dim; 0 = all)."""
    xsa_layers: list[int] = field(default_factory=list)
    """Layers whose attention output loses its component along each token's own value vector (XSA)."""
    recur_passes: int = 1
    """Depth recurrence: layers recur_start..recur_end run this many times in a row (1 = off)."""
    recur_start: int = 0
    """First looped layer."""
    recur_end: int = 0
    """Last looped layer (inclusive)."""
    recur_from: float = 0.0
    """Training fraction at which the looping switches on (evaluation always loops)."""
    parallel_from: int = 0
    """First layer of two parallel residual lanes (attention / MLP) with a learned mix; 0 = off."""
    skip_gates: bool = False
    """Sigmoid-gated U-Net skips (gates init 0: skip and stream averaged)."""
    smear_gate: bool = False
    """SmearGate: each token mixes in the previous token's embedding through a learned gate, masked at BOS."""
    attn_gate: bool = False
    """The record's sparse attention-output gate: each head's output times a sigmoid of 12 input channels."""
    doc_mask: bool = False
    """Attention never crosses a BOS boundary (each document attends only to itself), in training and in eval, as
    the record's varlen attention; needs BOS-separated data."""


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
    warmdown_frac: float = 0.0
    """Warmdown over this fraction of training, by wallclock or steps, whichever is further (0 = warmdown_steps)."""
    min_lr: float = 0.0
    """Floor of the learning-rate multiplier in the warmdown (0..1; the record's 0.10): the line stops there."""
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
    muon_coefficients: Any = "standard"
    """Newton-Schulz (a, b, c): standard (torch's, every iteration), polar_express (the record's per-iteration
    tuples, the last repeating) or a list of [a, b, c], one per iteration or one for all."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.95
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    compile: bool = False
    """torch.compile the model (on by default on CUDA presets; on CPU only when asked)."""
    checkpoint_every: int = 0
    """Write a resumable training checkpoint every this many steps (0 = only when a signal stops the run)."""


@dataclass
class RegConfig:
    weight_decay: float = 0.0
    """Decoupled decay of the Muon block matrices: p <- p * (1 - lr * wd)."""
    embed_weight_decay: float = 0.0
    """Decoupled decay of the embedding (and untied head)."""
    scalar_weight_decay: float = 0.0
    """Decoupled decay of vectors and scalars not listed in `no_decay`."""
    no_decay: list[str] = field(
        default_factory=lambda: ["q_gain", "attn_scale", "mlp_scale", "resid_mix", "skip_weights", "ln_scale",
                                 "skip_gates", "attn_gate_w", "smear_", "parallel_"]
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
class GroupClipK:
    embed: float = 0.0
    """sdclip k of the token embedding (0 = export.clip_k)."""
    attn_q: float = 0.0
    """Attention query projections."""
    attn_k: float = 0.0
    """Attention key projections."""
    attn_v: float = 0.0
    """Attention value projections."""
    attn_out: float = 0.0
    """Attention output projections."""
    mlp_in: float = 0.0
    """MLP input (fc) matrices."""
    mlp_out: float = 0.0
    """MLP output (proj) matrices."""
    other: float = 0.0
    """Any other quantized tensor (0 = export.clip_k, as every group; fit.sdclip_ks searches the groups at 0)."""

    def for_group(self, group: str, default_k: float) -> float:
        return getattr(self, group) or default_k


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
    group_clip_k: GroupClipK = field(default_factory=GroupClipK)
    """sdclip k per tensor group (the record's: MLP 11.5, attention 13.0, embedding 14.0); 0 means `clip_k`."""
    scale_min: float = 0.0
    """Floor on every row's scale (the reference export uses 1/127)."""
    float_max_numel: int = 0
    """Tensors with at most this many elements stay float (0 = quantize every matrix; the reference uses 65,536)."""
    float_dtype: str = "float16"
    """Storage dtype of kept-float tensors (float16, bfloat16 or float32)."""
    control_dtype: str = "float32"
    """Storage dtype of the control tensors (gains, scales, mixes, gates): float32 as the reference keeps them, or
    float16 (half their bytes)."""
    prune: float = 0.0
    """Fraction of weights to prune (meaning set by `prune_kind`)."""
    prune_kind: str = "magnitude"
    """magnitude (per tensor), global, rows, cols, heads or selective (smallest nonzero quantized values)."""
    codec: str = "auto"
    """zlib, zstd, lzma, brotli, rans, ctx, or auto (smallest per tensor group)."""
    codec_level: int = -1
    """Compression level for zlib/zstd/lzma/brotli (-1 = each codec's maximum)."""
    shuffle: bool = False
    """Byte-shuffle scales before compressing."""
    code_bytes: int = -1
    """Code bytes added to the artifact size when `code_files` is empty (-1 = measured: the train_gpt.py `pgolf pack`
    would ship for this config)."""
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
    lqer_rank: int = 0
    """LQER: rank of the stored low-rank correction of the quantization error (0 = off; export/lqer.py)."""
    lqer_bits: int = 4
    """LQER factor B's bits (and A's too when lqer_group is 0)."""
    lqer_group: int = 64
    """LQER: values of B per fp16 scale, A at 2 bits with one scale, as the record stores them (0: both factors
    per row at lqer_bits)."""
    lqer_top_k: int = 3
    """LQER corrects the tensors with the largest quantization error, this many."""
    lqer_tensors: list[str] = field(default_factory=list)
    """LQER corrects these tensors (state-dict names) instead of the top_k."""


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
    clips: list[str] = field(default_factory=lambda: ["mse", "sdclip"])
    """Clip strategies tried, one knapsack each (empty: the base export.clip)."""
    sdclip_ks: list[float] = field(default_factory=lambda: [10.0, 20.0])
    """sdclip k values tried for each tensor group apart (the knapsack picks one per group), when fit.clips lists
    sdclip; the base export's own k of a group is tried too when its clip is sdclip."""
    gptq: list[bool] = field(default_factory=lambda: [False, True])
    """Level choice tried: rounding (false) and GPTQ (true), one knapsack each (empty: the base export.gptq)."""
    control_dtypes: list[str] = field(default_factory=lambda: ["float32", "float16"])
    """Storage of the control tensors tried (export.control_dtype), priced in bytes and Fisher error like a bit
    (empty: the base export.control_dtype)."""
    codecs: list[str] = field(default_factory=list)
    """Codecs tried, one knapsack each with its own shipped code bytes (empty: the base export.codec; auto is
    searched as ctx and rans, so ctx is chosen only where its smaller streams pay for its larger decoder)."""
    max_prune: float = 0.3
    """Largest selective-pruning fraction the pruning fill may use (0 = no pruning)."""
    lqer_ranks: list[int] = field(default_factory=lambda: [0])
    """LQER ranks the upward fill may give single tensors (export.lqer_bits/group), priced in bytes like a bit of
    width; [0] turns it off."""
    fill: float = 0.995
    """Pruning bisection stops once a candidate uses this share of the model-byte limit."""
    fill_candidates: int = 0
    """Proxy-frontier points above the budget that are pruned down to fit (at least one when no point fits
    unpruned; the uniform anchors are pruned to fit whatever this is). 0 by default: in the wide default space no
    such fill won on records_tiny or the demo model, and their bisections of exactly coded sizes were a fifth of
    fit-budget's time."""
    evals: int = 3
    """Fitting candidates evaluated in BPB, best proxy first (plus the uniform anchors)."""
    val_tokens: int = 8192
    """Validation tokens per search evaluation (0 = the whole configured set)."""
    fisher_tokens: int = 2048
    """Validation tokens for the Fisher sensitivity pass."""
    fisher_seq_len: int = 128
    """Sequence length of the Fisher pass (shorter: more per-sequence gradients per token)."""


TTT_TARGETS = ("q", "k", "v", "o", "mlp", "head")
"""Where per-document LoRA adapters can sit: the q/k/v projections, beside a block's whole attention (o) and MLP, and
beside the head (on the final hidden state, added to the logits before the softcap)."""


@dataclass
class TTTConfig:
    name: str = "none"
    """Test-time training preset: none (static eval), cpu or records (conf/ttt); pgolf/ttt says how it scores."""
    rank: int = 0
    """Per-document LoRA rank (0 = no per-document adapters, global phases only)."""
    alpha: float = 144.0
    """LoRA output scale is alpha / rank, so the step size does not change with the rank."""
    targets: list[str] = field(default_factory=lambda: list(TTT_TARGETS))
    """Where the adapters sit: any of q, k, v, o, mlp, head."""
    lr: float = 1e-4
    """AdamW learning rate of the adapters."""
    beta1: float = 0.0
    """AdamW beta1 of the adapters."""
    beta2: float = 0.999
    """AdamW beta2 of the adapters."""
    weight_decay: float = 0.0
    """AdamW (decoupled) weight decay of the adapters."""
    warm_start: bool = True
    """Keep each adapter's A factor from one batch of documents to the next (B restarts at zero)."""
    chunk: int = 48
    """Tokens of a document scored per step; the adapters then train on them before the next chunk is scored."""
    context: int = 2048
    """Most tokens a chunk is scored with (its window ends at the chunk's end, never before its document's start);
    also the sequence length of the global phases."""
    batch_docs: int = 64
    """Documents adapted side by side (each with its own adapter rows), batched by length."""
    grad_steps: int = 1
    """Adapter steps per chunk."""
    phases: int = 0
    """Global phases: after each, every weight trains (SGD) on the documents scored so far (0 = none)."""
    prefix_docs: int = 0
    """Documents (in scoring order) the global phases cover; phase p ends after p/phases of them."""
    global_lr: float = 1e-3
    """Peak SGD learning rate of a global phase (cosine to zero over its chunks)."""
    global_momentum: float = 0.9
    """SGD momentum of a global phase."""
    global_epochs: int = 1
    """Passes over each chunk of a global phase."""
    global_chunk_tokens: int = 32768
    """Tokens per learning-rate step of a global phase's cosine (the last chunk is not trained on)."""
    global_batch_seqs: int = 32
    """Sequences of `context` tokens per global SGD step."""
    global_grad_clip: float = 1.0
    """Gradient-norm clip of a global phase (0 = off)."""


def ttt_rank_problem(t: TTTConfig, model_dim: int) -> str | None:
    """The one TTT problem that needs the model: adapters wider than the layers they adapt."""
    if t.name != "none" and t.rank > model_dim:
        return f"ttt.rank ({t.rank}) is larger than the model's width (model.model_dim {model_dim})"
    return None


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
    ttt: TTTConfig = field(default_factory=TTTConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    seed: int = 1337
    """Random seed for init, data order and dropout."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""


def from_plain(cls: type, data: dict[str, Any]) -> Any:
    """A `cls` dataclass from plain nested dicts (a packed config), nested records rebuilt; an unknown key is an
    error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}")
    kwargs = {}
    for name, value in data.items():
        factory = fields[name].default_factory
        default = factory() if factory is not dataclasses.MISSING else None
        kwargs[name] = from_plain(type(default), value) if dataclasses.is_dataclass(default) else value
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config record (for YAML/JSON output)."""
    return dataclasses.asdict(cfg)
