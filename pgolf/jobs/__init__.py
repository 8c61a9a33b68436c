"""Jobs: what pgolf's verbs and the shipped script run, in the order they run it.

The stages themselves (train/, export/, evaluate) know nothing of run directories; a job joins them:
- `train_job`: train -> save -> export -> read back -> score, in a run directory (`pgolf train`);
- `export_job`: export and score a saved model (`pgolf export`, `pgolf eval`);
- `sources`: what a path on the command line means (a run directory, an artifact, a checkpoint) and which
  config applies to it;
- `layout`: the one module that knows a run directory's layout (artifacts, records, fit files, state, metrics);
- the pieces the shipped `train_gpt.py` runs too, without Hydra or safetensors: `start` (device, seeds, data,
  model), `models` (build a model from the config or from saved kwargs), `scorer` (validation data and the one
  Scorer), `roundtrip` (GPTQ calibration and the export round trip). The score the script prints is computed by
  the same lines as `pgolf eval`'s.
- `float_checkpoint`: pgolf's safetensors and the reference script's `final_model.pt`.
"""
