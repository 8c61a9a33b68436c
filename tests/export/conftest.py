"""Tiny reference-GPT-shaped state dicts with heavy-tailed (student-t) weights, for the export tests."""

import dataclasses

import pytest
import torch
from hypothesis import strategies as st

from pgolf.config import ExportConfig
from pgolf.export.artifact import export_state_dict


def heavy_tailed(*shape: int, seed: int = 0, df: float = 4.0) -> torch.Tensor:
    """Student-t values times a log-normal scale per row: the shape of trained weight rows."""
    gen = torch.Generator().manual_seed(seed)
    normal = torch.randn(*shape, generator=gen)
    chi2 = torch.randn(*shape, int(df), generator=gen).pow(2).sum(-1)  # df integer degrees of freedom
    rows = shape[0] if len(shape) > 1 else 1
    row_scale = torch.exp(0.3 * torch.randn(rows, *([1] * (len(shape) - 1)), generator=gen)) * 0.02
    return normal / torch.sqrt(chi2 / int(df)) * row_scale


def make_state_dict(layers: int = 2, dim: int = 32, vocab: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys and shapes of the reference GPT (GQA with half the heads for K/V, MLP 2x, tied embedding)."""
    sd = {"tok_emb.weight": heavy_tailed(vocab, dim, seed=seed)}
    for i in range(layers):
        p, s = f"blocks.{i}.", seed + 10 * (i + 1)
        sd[p + "attn.c_q.weight"] = heavy_tailed(dim, dim, seed=s)
        sd[p + "attn.c_k.weight"] = heavy_tailed(dim // 2, dim, seed=s + 1)
        sd[p + "attn.c_v.weight"] = heavy_tailed(dim // 2, dim, seed=s + 2)
        sd[p + "attn.proj.weight"] = heavy_tailed(dim, dim, seed=s + 3)
        sd[p + "attn.q_gain"] = torch.full((4,), 1.5)
        sd[p + "mlp.fc.weight"] = heavy_tailed(2 * dim, dim, seed=s + 4)
        sd[p + "mlp.proj.weight"] = heavy_tailed(dim, 2 * dim, seed=s + 5)
        sd[p + "attn_scale"] = 1 + 0.1 * heavy_tailed(dim, seed=s + 6)
        sd[p + "mlp_scale"] = 1 + 0.1 * heavy_tailed(dim, seed=s + 7)
        sd[p + "resid_mix"] = torch.stack((torch.ones(dim), torch.zeros(dim))) + 0.01 * heavy_tailed(2, dim, seed=s + 8)
    sd["skip_weights"] = torch.ones(layers // 2, dim)
    return sd


MODEL_CONFIG = {"vocab_size": 64, "num_layers": 2, "model_dim": 32, "num_heads": 4, "num_kv_heads": 2,
                "mlp_mult": 2, "tie_embeddings": True}


@pytest.fixture
def state_dict() -> dict[str, torch.Tensor]:
    return make_state_dict()


@pytest.fixture
def model_config() -> dict:
    return dict(MODEL_CONFIG)


@pytest.fixture
def heavy():
    """The `heavy_tailed(*shape, seed=, df=)` generator."""
    return heavy_tailed


@pytest.fixture(scope="session")
def small_artifact() -> bytes:
    """Bytes of a 1-layer artifact coded with every codec in play (auto, shuffle on)."""
    cfg = dataclasses.replace(ExportConfig(float_max_numel=256), codec="auto", codec_level=1, shuffle=True)
    return export_state_dict(make_state_dict(layers=1, dim=16, vocab=32), MODEL_CONFIG, cfg).blob


def damaged(blob: bytes, data: st.DataObject) -> bytes:
    """`blob` after 1..4 random flips, cuts (1..8 bytes) and insertions (1..8 bytes), drawn from `data`."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del out[pos : pos + data.draw(st.integers(1, 8))]
        else:
            out[pos:pos] = bytes(data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=8)))
    return bytes(out)
