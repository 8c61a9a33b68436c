"""Float checkpoints (jobs/float_checkpoint.py): pgolf's safetensors carry their model config; a reference-style
`final_model.pt` is read weights-only with its config read off the shapes; nothing else is unpickled."""

import io
import json
from pathlib import Path

import pytest
import torch

from pgolf.config import compose
from pgolf.errors import ArtifactError
from pgolf.jobs.float_checkpoint import MODEL_CONFIG_KEY, load_checkpoint, save_checkpoint
from pgolf.jobs.models import build_model, rebuild_model

SMALL = ["model.num_layers=2", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1",
         "model.vocab_size=64"]


def _model(*overrides: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(compose([*SMALL, *overrides]))


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == torch.float32, name
        assert torch.equal(a[name], b[name].float()), name


@pytest.mark.parametrize("overrides", [(), ("model=records_tiny", *SMALL[1:4], "model.num_layers=6")],
                         ids=["baseline", "records_tiny"])
def test_safetensors_round_trip_with_the_model_config(tmp_path, overrides):
    model = _model(*overrides)
    state = model.state_dict()
    state["tok_emb.weight"] = state["tok_emb.weight"].to(torch.bfloat16)  # any float dtype comes back as float32
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, state, model.config)
    config, loaded = load_checkpoint(path)
    assert config == model.config  # every kwarg, not only what shapes tell (softcap, rope base, record knobs ...)
    _same_tensors(loaded, state)
    rebuilt = rebuild_model(config, loaded).eval()
    model.load_state_dict(loaded)
    tokens = torch.randint(0, 64, (1, 16))
    with torch.no_grad():
        assert torch.equal(rebuilt(tokens), model.eval()(tokens))  # the same function, records knobs included
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # written atomically, no temporary left


def _reference_file(tmp_path: Path, state: dict, name: str = "final_model.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)  # what the reference train_gpt.py writes: a plain dict of tensors
    return path


@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module.", "module._orig_mod."])
def test_a_reference_pt_loads_weights_only_with_its_config_read_off_the_shapes(tmp_path, prefix):
    model = build_model(compose([]))
    state = model.state_dict()
    path = _reference_file(tmp_path, {prefix + k: v for k, v in state.items()})
    config, loaded = load_checkpoint(path)
    _same_tensors(loaded, state)  # wrapper prefixes stripped
    expected = {k: model.config[k] for k in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads",
                                             "mlp_mult", "tie_embeddings")}
    assert {k: config[k] for k in expected} == expected == {"vocab_size": 1024, "num_layers": 4, "model_dim": 128,
                                                            "num_heads": 4, "num_kv_heads": 2, "mlp_mult": 2,
                                                            "tie_embeddings": True}
    assert config["ln_scale"] == "none"  # fixed scaling has no tensor: a reference file is the reference model
    rebuild_model(config, loaded)  # the inferred config builds a model the weights load into, strictly


@pytest.mark.parametrize("overrides, expected", [
    (("model.tie_embeddings=false", "model.mlp_mult=3", "model.num_kv_heads=2"),
     {"tie_embeddings": False, "mlp_mult": 3, "num_kv_heads": 2}),
    (("reg.ln_scale=learned", "model.num_layers=3"), {"ln_scale": "learned", "num_layers": 3}),
])
def test_the_inferred_config_follows_the_shapes(tmp_path, overrides, expected):
    model = _model(*overrides)
    config, loaded = load_checkpoint(_reference_file(tmp_path, model.state_dict()))
    assert {k: config[k] for k in expected} == expected
    rebuild_model(config, loaded)


class Payload:
    """Unpickling this runs code: it creates the file named `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("make", [
    lambda marker: Payload(marker),
    lambda marker: {"tok_emb.weight": torch.zeros(4, 2), "hook": Payload(marker)},
], ids=["object", "dict-with-object"])
def test_a_pt_holding_an_object_is_refused_and_runs_no_code(tmp_path, make):
    marker = tmp_path / "pwned"
    path = _reference_file(tmp_path, make(str(marker)))
    with pytest.raises(ArtifactError) as info:
        load_checkpoint(path)
    assert not marker.exists(), "loading ran code from the file"
    assert "not a weights-only torch state dict" in str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content, message", [
    ({"tok_emb.weight": torch.zeros(4, 2), "step": 3}, "expected a plain state dict of tensors"),
    ([torch.zeros(2)], "expected a plain state dict of tensors"),
    ({"weight": torch.zeros(2, 2)}, "not a pgolf/reference GPT state dict"),
])
def test_a_pt_that_is_not_a_gpt_state_dict_is_a_one_line_error(tmp_path, content, message):
    with pytest.raises(ArtifactError, match=message) as info:
        load_checkpoint(_reference_file(tmp_path, content))
    assert "\n" not in str(info.value)


def test_a_damaged_or_missing_checkpoint_is_a_one_line_error(tmp_path):
    model = _model()
    good = tmp_path / "model.safetensors"
    save_checkpoint(good, model.state_dict(), model.config)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    for path, message in ((cut, "not a readable safetensors file"), (tmp_path / "nope.safetensors", "no such"),
                          (tmp_path / "nope.pt", "no such")):
        with pytest.raises(ArtifactError, match=message) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    buffer = io.BytesIO(good.read_bytes())
    assert json.loads(buffer.getvalue()[8:8 + int.from_bytes(buffer.getvalue()[:8], "little")])["__metadata__"][
        MODEL_CONFIG_KEY] == json.dumps(model.config, sort_keys=True)
