"""`pgolf search`: a hyperparameter search that stops losing trainings early on evidence, on Optuna.

What is non-standard here:
- The objective is the number a user submits: fit-budget's round-trip val_bpb at --max-bytes (else the round-trip
  val_bpb), never the float loss. Export keys in the space re-export a training's weights without retraining.
- Early stopping: every trial validates and checkpoints at rungs (1/9 and 1/3 of training) and reports a rung
  score to the pruner (successive halving/ASHA or Hyperband); a pruned trial keeps its checkpoint. The rung score
  is the validation val_bpb or a short cooldown branched from the rung's checkpoint (warmup-stable-decay);
  `pgolf report` shows the Spearman correlation of each with the finished trials' objective.
- Every trial is a normal run directory under runs/searches/<name>/trials/, the study is Optuna's journal file
  (JSON lines, shared by worker processes and submitit jobs): re-running the command resumes it, a killed
  trial is retried on its run directory, a finished one is never redone.
- Finalists: the best configs and the space's defaults re-run with several seeds, compared with the sweep's
  paired statistics.

Modules: `space` (the sweeper grammar -> parameters), `trial` (one trial: train, rungs, cooldown, objective),
`study` (folder, journal, samplers, pruners, stale trials, trials table), `run` (the entry: the loop, workers,
finalists, search.json).
"""
