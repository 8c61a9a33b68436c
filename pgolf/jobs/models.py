"""Models from a config (`build_model`) or from saved kwargs and weights (`rebuild_model`, one-line errors)."""

from __future__ import annotations

from pathlib import Path

import torch

from pgolf.errors import ArtifactError
from pgolf.model.build import make_gpt
from pgolf.model.gpt import GPT, load_reference_state_dict
from pgolf.model.knobs import RECORD_KNOBS
from pgolf.schema import Config


def rebuild_model(model_config: dict, state_dict: dict[str, torch.Tensor] | None = None,
                  where: Path | str = "checkpoint") -> GPT:
    """A GPT from saved kwargs, with `state_dict` loaded strictly (one-line error on mismatch)."""
    try:
        model = make_gpt(**model_config)
    except TypeError as exc:
        raise ArtifactError(f"{where}: model config does not fit the GPT ({exc})") from exc
    if state_dict is not None:
        try:
            load_reference_state_dict(model, state_dict)
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{where}: state dict does not match the model config: {exc}") from exc
    return model


def build_model(cfg: Config) -> GPT:
    """The GPT sized by `model`, with the in-model regularizers of `reg`."""
    m, r = cfg.model, cfg.reg
    return make_gpt(vocab_size=m.vocab_size, num_layers=m.num_layers, model_dim=m.model_dim, num_heads=m.num_heads,
                    num_kv_heads=m.num_kv_heads, mlp_mult=m.mlp_mult, tie_embeddings=m.tie_embeddings,
                    tied_embed_init_std=m.tied_embed_init_std, rope_base=m.rope_base, qk_gain_init=m.qk_gain_init,
                    logit_softcap=r.softcap, ln_scale=r.ln_scale, dropout=r.dropout, drop_path=r.drop_path,
                    doc_mask=m.doc_mask,
                    **{key: getattr(m, key) for key in RECORD_KNOBS})
