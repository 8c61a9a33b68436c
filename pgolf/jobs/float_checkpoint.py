"""Float checkpoints: pgolf's safetensors and the reference script's `final_model.pt`.

pgolf saves `model.safetensors` with the model config as JSON metadata, so a
checkpoint rebuilds its model without guessing. A reference `final_model.pt`
is a plain state dict: it is loaded with `weights_only=True` (no pickle code
runs) and its model config is read off the tensor shapes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from pgolf.atomic import atomic_write_bytes
from pgolf.errors import ArtifactError

MODEL_CONFIG_KEY = "pgolf.model_config"


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], model_config: dict) -> None:
    """Write float weights + model config atomically as safetensors."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    blob = save(tensors, metadata={MODEL_CONFIG_KEY: json.dumps(model_config, sort_keys=True)})
    atomic_write_bytes(path, blob)


def load_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(model_config, float32 state dict) from a .safetensors or reference .pt file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from exc
        config = json.loads(meta[MODEL_CONFIG_KEY]) if MODEL_CONFIG_KEY in meta else infer_model_config(state, path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad or unsafe file
            raise ArtifactError(f"{path}: not a weights-only torch state dict ({str(exc).splitlines()[0]})") from exc
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ArtifactError(f"{path}: expected a plain state dict of tensors")
        state = {re.sub(r"^(_orig_mod\.|module\.)+", "", k): v for k, v in state.items()}
        config = infer_model_config(state, path)
    return config, {k: v.float() for k, v in state.items()}


def infer_model_config(state: dict[str, torch.Tensor], where: Path | str) -> dict:
    """Model constructor kwargs read off a reference-style state dict's shapes."""
    try:
        vocab_size, model_dim = state["tok_emb.weight"].shape
        layers = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
        num_heads = state["blocks.0.attn.q_gain"].numel()
        head_dim = model_dim // num_heads
        num_kv_heads = state["blocks.0.attn.c_k.weight"].shape[0] // head_dim
        mlp_mult = state["blocks.0.mlp.fc.weight"].shape[0] // model_dim
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{where}: not a pgolf/reference GPT state dict (missing {exc})") from exc
    return {
        "vocab_size": int(vocab_size), "num_layers": len(layers), "model_dim": int(model_dim),
        "num_heads": int(num_heads), "num_kv_heads": int(num_kv_heads), "mlp_mult": int(mlp_mult),
        "tie_embeddings": "lm_head.weight" not in state,
        "ln_scale": "learned" if "blocks.0.ln_scale" in state else "none",
    }
