"""`pgolf sweep`: a grid of trainings and exports, resumable, with results after every cell.

What is non-standard here:
- Axes split by what they change. Training axes (model, train, reg, data keys and
  groups, and seeds) give one training per combination: a *training cell*, a normal
  run directory `cells/<id>` whose name is fixed by its values. Export axes
  (`export.*`) never retrain: every export point re-exports that cell's float
  weights into its `artifacts/`. With `max_bytes`, each training also gets one
  fit-budget. A results row is one training x one export point (or its fit).
- The cell folder is the source of truth. A cell is finished when its `cell.json`
  (its rows, written atomically last) exists; `results.csv`/`results.parquet` are
  rewritten from all finished cells after each one, in grid order, so a resumed
  sweep ends with the same table as an uninterrupted one. A cell killed after its
  training finished (complete `summary.json`) keeps the training and redoes only
  its exports; an unfinished training resumes from its checkpoint when it has one
  (a signal writes one, and `train.checkpoint_every`), else it is started over.
- A failed cell (NaN, an error) is a finished cell with `status=failed` and its
  one-line error; `retry_failed` runs those again.
- Re-running a sweep folder with a grid that only adds values (or seeds) extends it;
  any other difference is refused, so one folder never mixes two experiments.
- Launchers: cells run here one after another, in `jobs` spawned worker processes
  (torch threads = cores / jobs), or as submitit jobs (local subprocesses or
  Slurm) whose results are read back from the cells' folders. A submitit cell
  with several processes (`launcher.nodes` x `launcher.gpus_per_node`) starts its
  training through torchrun on each node (`python -m pgolf.sweep CELL_SPEC`, `sweep/__main__.py`); a
  preempted or timed-out job is requeued and resumes from the cell's newest
  checkpoint.


Modules: `plan` (the grid, its folder and results table), `cells` (one training cell: train, export points,
fit-budget, its rows), `launch` (in process, a pool of workers, submitit).
"""
