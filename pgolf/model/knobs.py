"""The record-era model knobs (model/records.py): their off values and the values that cannot work.

Torch-free, so config validation can check a config before anything is built.
"""

from __future__ import annotations

RECORD_KNOBS = {"mlp_leaky_slope": 0.0, "rope_dims": 0, "xsa_layers": [], "recur_start": 0, "recur_end": 0,
                "recur_passes": 1, "recur_from": 0.0, "parallel_from": 0, "skip_gates": False, "smear_gate": False,
                "attn_gate": False}
"""Knob -> its off value; a model with every knob off is the baseline GPT."""
GATE_WINDOW = 12
"""Input channels of the smear and attention-output gates (the record's)."""
BOS_ID = 1
"""The challenge tokenizers' BOS id (SentencePiece exports and the pure-byte JSON): each document starts with it;
SmearGate does not smear across it and `model.doc_mask` does not attend across it."""


def uses_records(knobs: dict) -> bool:
    """Whether any record-era knob in `knobs` is on."""
    return any((list(value) if key == "xsa_layers" else value) != RECORD_KNOBS[key]
               for key, value in knobs.items() if key in RECORD_KNOBS)


def knob_problems(knobs: dict, num_layers: int, model_dim: int, num_heads: int) -> list[str]:
    """One message per knob value that cannot work, naming its `model.` key."""
    k = {**RECORD_KNOBS, **knobs}
    L = num_layers
    head_dim = model_dim // num_heads if num_heads > 0 else 0
    problems = []
    if k["mlp_leaky_slope"] < 0:
        problems.append(f"model.mlp_leaky_slope must be >= 0, got {k['mlp_leaky_slope']}")
    r = k["rope_dims"]
    if r and (r % 2 or not 2 <= r <= head_dim):
        problems.append(f"model.rope_dims must be 0 (all) or even and at most the head dim {head_dim}, got {r}")
    bad = [i for i in k["xsa_layers"] if not 0 <= i < L]
    if bad:
        problems.append(f"model.xsa_layers names layers {bad}; the model has layers 0..{L - 1}")
    if k["recur_passes"] < 1:
        problems.append(f"model.recur_passes must be >= 1 (1 = off), got {k['recur_passes']}")
    elif k["recur_passes"] > 1:
        s, e = k["recur_start"], k["recur_end"]
        if not 0 <= s <= e < L:
            problems.append(f"model.recur_start..model.recur_end must be a range of layers 0..{L - 1}, got {s}..{e}")
        if not 0 <= k["recur_from"] <= 1:
            problems.append(f"model.recur_from must be a training fraction in [0, 1], got {k['recur_from']}")
        if k["parallel_from"] and k["parallel_from"] <= e:
            problems.append(f"model.parallel_from ({k['parallel_from']}) must come after the looped layers "
                            f"(model.recur_end {e})")
    if not 0 <= k["parallel_from"] < L:
        problems.append(f"model.parallel_from must be 0 (off) or a layer 1..{L - 1}, got {k['parallel_from']}")
    if (k["smear_gate"] or k["attn_gate"]) and model_dim < GATE_WINDOW:
        problems.append(f"model.smear_gate and model.attn_gate read {GATE_WINDOW} channels; model.model_dim is "
                        f"{model_dim}")
    return problems
