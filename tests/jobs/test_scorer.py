"""The job pieces the shipped script shares: the Scorer, the export round trip and the model builders."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from pgolf import config as C
from pgolf.data.tokenizer import ByteLUTs
from pgolf.errors import ArtifactError
from pgolf.export.artifact import export_state_dict, load_artifact
from pgolf.jobs.models import build_model, rebuild_model
from pgolf.jobs.roundtrip import export_roundtrip, write_and_score
from pgolf.jobs.scorer import Scorer, ValData
from pgolf.runtime.device import resolve_device

VOCAB = 64
SEQ = 16


def tiny_cfg(**export):
    cfg = C.compose(["model.vocab_size=64", "model.num_layers=2", "model.model_dim=32", "model.num_heads=4",
                     "model.num_kv_heads=2", f"train.seq_len={SEQ}", "export.codec=zlib"])
    return dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, **export))


def scorer_for(n_tokens=4 * SEQ + 1, stride=0, seed=0) -> Scorer:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (n_tokens,), generator=gen)
    luts = ByteLUTs(base_bytes=torch.randint(1, 4, (VOCAB,), generator=gen).to(torch.int16),
                    has_leading_space=torch.zeros(VOCAB, dtype=torch.bool),
                    is_boundary=torch.zeros(VOCAB, dtype=torch.bool))
    return Scorer(ValData(tokens, luts, VOCAB), SEQ, stride, resolve_device("cpu"))


def trained_like(seed=0):
    torch.manual_seed(seed)
    model = build_model(tiny_cfg())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def expected_bpb(model, scorer):
    """Non-overlapping windows written out by hand: nats of every target / ln 2 / the LUT bytes of the targets."""
    tokens = scorer.val.tokens
    nats, nbytes = 0.0, 0
    with torch.no_grad():
        for start in range(0, tokens.numel() - 1, SEQ):
            x = tokens[start:start + SEQ][None]
            y = tokens[start + 1:start + SEQ + 1][None]
            x = x[:, : y.shape[1]]
            nats += F.cross_entropy(model(x)[0].double(), y[0], reduction="sum").item()
            nbytes += int(scorer.val.luts.base_bytes[y[0]].sum())
    return nats / math.log(2) / nbytes


def test_the_scorer_computes_the_canonical_bpb_and_its_slice_is_the_head_of_the_tokens():
    model, scorer = trained_like(), scorer_for()
    model.eval()
    result = scorer.score(model)
    assert result.tokens == scorer.val.tokens.numel() - 1
    assert result.bpb == pytest.approx(expected_bpb(model, scorer), rel=1e-5)
    head = scorer.head(2 * SEQ)
    assert head.val.tokens.numel() == 2 * SEQ + 1 and torch.equal(head.val.tokens, scorer.val.tokens[: 2 * SEQ + 1])
    assert head.score(model).bpb == pytest.approx(expected_bpb(model, head), rel=1e-5)
    assert scorer.head(0).val.tokens.numel() == scorer.val.tokens.numel()
    assert scorer.scored_on == {"eval_device": "cpu", "eval_dtype": "float32"}


def test_saved_weights_score_as_the_model_they_came_from():
    model, scorer = trained_like(), scorer_for()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert scorer.score_weights(dict(model.config), state, where="x").static.bpb == scorer.score(model).bpb


def test_the_round_trip_scores_the_file_on_disk(tmp_path):
    """export_roundtrip's score is the score of the artifact read back from disk, not of the weights in memory."""
    model, scorer = trained_like(), scorer_for()
    cfg = tiny_cfg(bits=4, clip="max")
    out = tmp_path / "a.pgolf"
    result, scores = export_roundtrip(model.state_dict(), model, dict(model.config), cfg, out, scorer)
    rt = scores.static
    assert scores.ttt is None  # ttt=none: static only
    assert out.stat().st_size == result.model_bytes == len(result.blob)
    config, restored = load_artifact(out)
    independent = rebuild_model(config, restored)
    independent.eval()
    assert rt.bpb == pytest.approx(expected_bpb(independent, scorer), rel=1e-5)
    assert rt.bpb != pytest.approx(scorer.score(model).bpb, rel=1e-6)  # 4 bits: the file is not the float model
    again = write_and_score(export_state_dict(model.state_dict(), dict(model.config), cfg.export), tmp_path / "b.pgolf",
                            scorer)
    assert (tmp_path / "b.pgolf").read_bytes() == out.read_bytes() and again.static.bpb == rt.bpb


def test_rebuilding_a_model_from_a_config_that_does_not_fit_is_a_one_line_error():
    model = trained_like()
    with pytest.raises(ArtifactError, match="where: model config does not fit"):
        rebuild_model({**model.config, "no_such_knob": 1}, where="where")
    state = model.state_dict()
    state.pop("tok_emb.weight")
    with pytest.raises(ArtifactError, match="where: state dict does not match"):
        rebuild_model(dict(model.config), state, where="where")


def test_build_model_takes_the_in_model_regularizers_from_reg():
    cfg = tiny_cfg()
    cfg = dataclasses.replace(cfg, reg=dataclasses.replace(cfg.reg, softcap=7.0))
    assert build_model(cfg).config["logit_softcap"] == 7.0
