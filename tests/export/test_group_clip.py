"""export.group_clip_k: an sdclip k per tensor group, in the export and in fit-budget's exact sizes."""

import dataclasses

import torch

from pgolf import config as C
from pgolf.config import ExportConfig
from pgolf.export.artifact import export_state_dict, quantize_state_dict
from pgolf.fit.search import Candidate, Search, export_config_of
from pgolf.fit.sizes import Setting, SizeTable
from pgolf.progress import no_progress
from tests.export.conftest import make_state_dict


def test_each_group_takes_its_own_k_and_the_rest_clip_k():
    sd = make_state_dict(dim=32)
    cfg = ExportConfig(bits=6, clip="sdclip", clip_k=12.0, codec="zlib",
                       group_clip_k=C.GroupClipK(mlp_in=3.0, embed=5.0))
    qsd = quantize_state_dict(sd, cfg)
    for name, k, qmax in (("blocks.0.mlp.fc.weight", 3.0, 31), ("tok_emb.weight", 5.0, 127),  # the embedding: int8
                          ("blocks.1.attn.c_q.weight", 12.0, 31), ("blocks.0.mlp.proj.weight", 12.0, 31)):
        expected = (k * sd[name].float().std(dim=1) / qmax).to(torch.float16)  # k row stds over qmax, stored fp16
        assert torch.equal(qsd[name].scale, expected), name


def test_fit_budget_prices_a_base_config_with_group_ks_exactly():
    sd = make_state_dict(dim=32)
    cfg = C.Config()
    cfg.export = dataclasses.replace(cfg.export, clip="sdclip", group_clip_k=C.GroupClipK(mlp_in=3.0, attn_out=20.0))
    model = {"vocab_size": 64, "num_layers": 2, "model_dim": 32, "num_heads": 2, "num_kv_heads": 1, "mlp_mult": 2}
    s = Search(sd, model, cfg, C.FitConfig(bits=[4, 6], embed_bits=[6]), None, no_progress)
    table = SizeTable(sd, s.quant_names, {n: torch.ones_like(sd[n]) for n in s.quant_names}, cfg.export)
    cand = Candidate(group_bits=dict.fromkeys(s.groups, 4), setting=Setting("sdclip", "rans"), prune=0.0,
                     stream_bytes=0, proxy=0.0,
                     group_k={g: cfg.export.group_clip_k.for_group(g, cfg.export.clip_k) for g in s.groups})
    cand = s.resized(table, cand, {}, 0.0)
    real = export_state_dict(sd, model, export_config_of(cand, cfg.export))
    assert real.model_bytes - real.overhead_bytes == cand.stream_bytes
