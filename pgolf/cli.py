"""The `pgolf` command line: parse, compose the config, call a stage, render.

Thin by design: every verb delegates to a plain function (jobs, fit, sweep,
data.prepare ...) and only renders its result. `main()` is the one place that
maps PgolfError to a one-line message on stderr and an exit code
(1 user/config/data, 2 usage, 3 budget, 4 audit fails, 130 interrupted); PGOLF_DEBUG=1 shows
the traceback. `--json` output alone goes to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pgolf import config as C
from pgolf.errors import Interrupted, PgolfError, UsageError

app = typer.Typer(
    name="pgolf",
    help="Parameter Golf experiment runner: train small LMs, quantize/prune/compress them to a byte budget, "
         "and score them in val_bpb after the artifact round trip.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Data: fetch the challenge's FineWeb, or turn your own text into a tokenizer + "
                            "challenge-format shards.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

Overrides = Annotated[list[str] | None, typer.Argument(
    help="Hydra overrides: key=value or group=option, e.g. model=baseline reg.weight_decay=0.09.",
    show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout and nothing else there.")]


class RichProgress:
    """Renders stage progress callbacks as rich bars on stderr (nothing when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.enabled = err.is_terminal
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=err, transient=True)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> RichProgress:
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()

    def __call__(self, task: str, done: float, total: float | None, **fields) -> None:
        if not self.enabled:
            return
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        if task not in self.tasks:
            self.tasks[task] = self.bar.add_task(task, total=total, info=info)
        self.bar.update(self.tasks[task], completed=done, total=total, info=info)


def echo(message: str) -> None:
    err.print(message, highlight=False, markup=False, soft_wrap=True)


def compose(overrides: list[str] | None) -> C.Config:
    return C.compose(overrides or [])


def print_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@data_app.command("prepare")
def data_prepare(
    source: Annotated[Path | None, typer.Argument(
        help="A folder of .txt files (one document each), a .jsonl file or folder of them (field `text`); "
             "omit for the built-in corpus (Python's own documentation).", show_default=False)] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Output folder for tokenizer.model and the shards (default: data/builtin_sp<V> for the built-in "
                      "corpus at a --vocab-size V other than 1024, else data/builtin).", show_default=False)] = None,
    vocab_size: Annotated[int, typer.Option(help="SentencePiece BPE vocabulary size.")] = 1024,
    val_fraction: Annotated[float, typer.Option(help="Fraction of documents held out for validation.")] = 0.1,
    name: Annotated[str, typer.Option(help="Shard name prefix ({name}_train_000000.bin).")] = "",
    force: Annotated[bool, typer.Option(help="Redo the preparation even if a matching one exists.")] = False,
) -> None:
    """Turn text into a tokenizer plus train/val shards in the challenge format.

    Examples: `pgolf data prepare` (built-in corpus to data/builtin);
    `pgolf data prepare --vocab-size 8192` (to data/builtin_sp8192, then `pgolf train data=builtin_sp8192`);
    `pgolf data prepare docs/ --out data/mydocs --vocab-size 4096`.
    """
    from pgolf.data.prepare import default_out_dir, prepare_data

    out_dir = default_out_dir(source, vocab_size) if out_dir is None else out_dir
    label = name or ("builtin" if source is None else out_dir.name)
    with RichProgress() as progress:
        prepared = prepare_data(source, out_dir, vocab_size=vocab_size, val_fraction=val_fraction, name=label,
                                progress=progress, force=force)
    echo(f"{prepared.dir}: {prepared.train_tokens:,} train tokens, {prepared.val_tokens:,} val tokens, "
         f"tokenizer {prepared.tokenizer}")


@data_app.command("fetch")
def data_fetch(
    variant: Annotated[str, typer.Argument(
        help="Which export of the challenge's FineWeb: sp1024, sp4096, sp8192 (SentencePiece BPE) or byte260 "
             "(UTF-8 bytes).")] = "sp1024",
    train_shards: Annotated[int, typer.Option(
        help="Training shards to download (100M tokens each); the validation split is always fetched whole.")] = 80,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Data root: gets manifest.json, datasets/fineweb10B_<variant>/ and tokenizers/.")] = Path("data"),
) -> None:
    """Download the challenge's FineWeb shards and tokenizer from the Hugging Face Hub, as its downloader does.

    Resumable: a re-run downloads only missing or bad files (every shard is checked by header and size).
    The repo is willdepueoai/parameter-golf under the prefix `datasets`; MATCHED_FINEWEB_REPO_ID and
    MATCHED_FINEWEB_REMOTE_ROOT_PREFIX override them, HF_ENDPOINT the Hub.

    Examples: `pgolf data fetch --train-shards 1` (quick start; then `pgolf train data=fineweb_sp1024`);
    `pgolf data fetch byte260 --train-shards 1` (then `pgolf train data=fineweb_byte260`).
    """
    from pgolf.data.fetch import fetch_data

    with RichProgress() as progress:
        fetched = fetch_data(variant, train_shards, out_dir, progress=progress)
    echo(f"{fetched.dir}: {len(fetched.train_files)} train shards ({fetched.train_tokens:,} tokens), "
         f"{len(fetched.val_files)} val shards ({fetched.val_tokens:,} tokens), tokenizer {fetched.tokenizer}; "
         f"{fetched.downloaded} files downloaded")


@app.command()
def train(
    overrides: Overrides = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue this run directory from its newest checkpoint, with its saved config (only "
                         "train.iterations and train.wallclock_s may be raised).", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a model, export it, read the artifact back and score it.

    Writes runs/<date>/<time>-<name>/ (config.yaml, state.json, metrics.jsonl, train.log, model.safetensors,
    artifacts/, summary.json, checkpoints/) and points runs/latest at it. Ctrl-C or SIGTERM stops after the
    current step and saves the weights, a checkpoint and the summary (exit 130 or 143); train.checkpoint_every=N
    also checkpoints every N steps. Under torchrun every process trains one share of each batch.

    Examples: `pgolf train`; `pgolf train model=baseline train=h100_10min data=fineweb_sp1024 reg=records`;
    `pgolf train --resume runs/latest train.iterations=600`.
    """
    from pgolf.jobs.train_job import resume_config, run_train

    cfg = resume_config(resume, overrides or []) if resume is not None else compose(overrides)
    with RichProgress() as progress:
        summary = run_train(cfg, progress=progress, echo=echo, run_dir=resume, resume=resume is not None)
    if not summary:
        return
    if as_json:
        print_json(summary)
    else:
        from pgolf.results.tables import diagnostics_table, summary_table

        out.print(diagnostics_table(summary["weight_diagnostics"]))
        out.print(summary_table(summary, f"pgolf train: {summary['run_dir']}", cfg.budget.max_bytes))


@app.command("eval")
def eval_(
    path: Annotated[Path, typer.Argument(help="An artifact (.pgolf), a checkpoint (.safetensors or the reference "
                                              "script's final_model.pt) or a run directory.")],
    overrides: Overrides = None,
    losses: Annotated[Path | None, typer.Option(
        "--losses", help="Also write every scored token's loss in nats (float32, validation order) to this .npy file.",
        show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Score a saved model in val_bpb on the configured validation data.

    Examples: `pgolf eval runs/latest`; `pgolf eval final_model.pt data=fineweb_sp1024 export.eval_stride=64`;
    `pgolf eval runs/latest --losses losses.npy`.
    """
    from pgolf.jobs.export_job import run_eval
    from pgolf.jobs.sources import config_for_source

    if losses is not None and losses.suffix != ".npy":
        raise UsageError(f"--losses {losses} must be a .npy file")
    cfg = config_for_source(path, overrides or [])
    with RichProgress() as progress:
        summary = run_eval(path, cfg, progress=progress, losses=losses)
    if losses is not None:
        echo(f"wrote {summary['val_tokens']:,} token losses (nats, float32) to {losses}")
    if as_json:
        print_json(summary)
    else:
        from pgolf.results.tables import summary_table

        out.print(summary_table(summary, f"pgolf eval: {path}", cfg.budget.max_bytes))


@app.command()
def export(
    source: Annotated[Path, typer.Argument(help="A run directory, a pgolf .safetensors checkpoint or the reference "
                                                "script's final_model.pt.")],
    overrides: Overrides = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Artifact path (default: the run's artifacts/ "
                                                               "folder, or beside the checkpoint).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Quantize, prune and code a model into an artifact, read it back and score it.

    A run directory's own data and seq_len are used unless overridden.

    Examples: `pgolf export runs/latest export.bits=5 export.prune=0.02`;
    `pgolf export final_model.pt export=int8_zlib data=fineweb_sp1024 data.val_tokens=1000000`.
    """
    from pgolf.jobs.export_job import run_export
    from pgolf.jobs.sources import config_for_source

    cfg = config_for_source(source, overrides or [])
    with RichProgress() as progress:
        summary = run_export(source, cfg, out_file, progress=progress)
    if as_json:
        print_json(summary)
    else:
        from pgolf.results.tables import export_groups_table, summary_table

        out.print(export_groups_table(summary))
        out.print(summary_table(summary, f"pgolf export: {summary['artifact']}", cfg.budget.max_bytes))


@app.command("fit-budget")
def fit_budget(
    source: Annotated[Path, typer.Argument(help="A run directory (its float model.safetensors), a pgolf "
                                                ".safetensors checkpoint or the reference script's final_model.pt.")],
    overrides: Overrides = None,
    max_bytes: Annotated[str | None, typer.Option(
        "--max-bytes", help="Total budget (artifact + code), e.g. 16MB, 15.5MB, 16MiB (default: budget.max_bytes).",
        show_default=False)] = None,
    margin: Annotated[str | None, typer.Option(
        "--margin", help="Safety margin kept below --max-bytes (default: budget.margin).", show_default=False)] = None,
    code_bytes: Annotated[int | None, typer.Option(
        "--code-bytes", help="Code bytes counted in the total (default: export.code_bytes).",
        show_default=False)] = None,
    code: Annotated[list[Path] | None, typer.Option(
        "--code", help="A file whose size counts as code (repeat for several); replaces --code-bytes.",
        show_default=False)] = None,
    val_tokens: Annotated[int | None, typer.Option(
        "--val-tokens", help="Validation tokens per search evaluation (0 = all; shorthand for fit.val_tokens, "
                             "default 8192); the final score uses data.val_tokens.", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Search bits per tensor group (then per tensor), clip and pruning for the best round-trip val_bpb within a
    byte budget.

    Writes the chosen artifact (a run's artifacts/fit-<bytes>.pgolf, or beside the checkpoint), reads it back,
    checks its file size plus code bytes against max-bytes - margin, scores it on the validation set and writes
    the candidate table as CSV and JSON and the chosen config as YAML (a run's fit/ folder). Exit 3 when no
    configuration fits. export.* overrides set the base export (e.g. export.codec=zstd, export.clip=sdclip);
    fit.* overrides set the search space (fit.bits, fit.embed_bits, fit.clips, fit.codecs, fit.max_prune,
    fit.evals, fit.val_tokens ...; see conf/fit/default.yaml).

    Examples: `pgolf fit-budget runs/latest --max-bytes 400KB`;
    `pgolf fit-budget runs/latest --max-bytes 420KB fit.bits=[5,6,7] fit.max_prune=0.2`;
    `pgolf fit-budget final_model.pt --max-bytes 16MB --margin 20KB --code train_gpt.py data=fineweb_sp1024`.
    """
    from pgolf.fit.budget import fit_budget as run_fit
    from pgolf.jobs.sources import config_for_source
    from pgolf.results.tables import fit_table

    if code_bytes is not None and code:
        raise UsageError("give --code-bytes or --code, not both")
    cfg = config_for_source(source, overrides or [])
    if code_bytes is not None:
        cfg.export.code_bytes, cfg.export.code_files = code_bytes, []
    if code:
        cfg.export.code_files = [str(p) for p in code]
    if val_tokens is not None:
        cfg.fit.val_tokens = val_tokens
    budget = C.parse_size(max_bytes if max_bytes is not None else cfg.budget.max_bytes)
    keep = C.parse_size(margin if margin is not None else cfg.budget.margin)
    with RichProgress() as progress:
        result = run_fit(source, cfg, budget, keep, progress=progress)
    summary = result.summary
    if as_json:
        print_json(summary)
    else:
        out.print(fit_table(summary))
        echo(f"wrote {summary['artifact']} ({summary['bytes']['total']:,} bytes with code, "
             f"{summary['budget_used']:.2%} of the budget), {summary['csv']}, {summary['json']}, "
             f"{summary['config']}")


@app.command()
def pack(
    source: Annotated[Path, typer.Argument(help="An artifact (.pgolf), a run directory (its newest artifact, e.g. "
                                                "fit-budget's choice) or a sweep cell (with its other seeds).")],
    out_dir: Annotated[Path, typer.Option("--out", help="The records folder to write.", show_default=False)],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="key=value changes to the packed config, on top of the artifact's recorded one (e.g. data.dir=...).",
        show_default=False)] = None,
    max_bytes: Annotated[str | None, typer.Option(
        "--max-bytes", help="Budget for artifact + train_gpt.py (default: budget.max_bytes, 16MB).",
        show_default=False)] = None,
    name: Annotated[str, typer.Option(help="submission.json name (default: the run name).")] = "",
    author: Annotated[str, typer.Option(help="submission.json author.")] = "",
    github_id: Annotated[str, typer.Option("--github-id", help="submission.json github_id.")] = "",
    blurb: Annotated[str, typer.Option(help="submission.json blurb (also the README's first paragraph).")] = "",
    wrap: Annotated[str, typer.Option(help="lzma: a self-extracting lzma+base85 train_gpt.py, as the top records "
                                           "ship; none: readable source.")] = "lzma",
    force: Annotated[bool, typer.Option(help="Replace --out when it exists and is not empty.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write a records folder the challenge can run: train_gpt.py, final_model.pgolf, submission.json,
    requirements.txt, README.md and the train logs.

    train_gpt.py carries the pgolf modules the packed config uses (no pgolf install needed): run under torchrun it
    trains, exports and scores; `python train_gpt.py --eval final_model.pgolf` scores the artifact. bytes_code is
    the size of that file as it ships, bytes_total adds the artifact; exit 3 when that is over the budget.

    Examples: `pgolf pack runs/latest --out records/my_run --author "A. B." --github-id ab`;
    `pgolf pack runs/sweeps/wd/cells/weight_decay=0.04-seed=1-abc123 --out records/wd004 --wrap none`.
    """
    from pgolf.ship.pack import pack as run_pack

    argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    summary = run_pack(source, out_dir, overrides or [], max_bytes, name, author, github_id, blurb, wrap, force,
                       command=" ".join(["pgolf", *argv[1:]]))
    if as_json:
        print_json(summary)
        return
    from pgolf.results.tables import pack_table

    out.print(pack_table(summary))


@app.command()
def sweep(
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Base overrides and sweep axes in Hydra's grammar: key=a,b,c, key=range(0,3), key=choice(x,y); "
             "sweep=NAME adds the grid of conf/sweep/NAME.yaml.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Sweep folder name under run.root/sweeps (default: derived from the grid's keys and the base "
                       "overrides, so the same command resumes the same sweep).", show_default=False)] = None,
    max_bytes: Annotated[str | None, typer.Option(
        "--max-bytes", help="Also fit every training to this total budget (one more row per training), e.g. 16MB.",
        show_default=False)] = None,
    margin: Annotated[str, typer.Option("--margin", help="Safety margin kept below --max-bytes.")] = "0",
    seeds: Annotated[int | None, typer.Option(
        "--seeds", help="Train every training cell with seeds seed, seed+1, ... (the same in every cell, so "
                        "comparisons pair).", show_default=False)] = None,
    baseline: Annotated[list[str] | None, typer.Option(
        "--baseline", help="KEY=VALUE of the baseline cell (repeat for several keys); each cell is compared with the "
                           "cell that has these values and its own other values. Default: the first cell.",
        show_default=False)] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Cells run at once (torch threads = cores / jobs); with "
                                                     "submitit, jobs in flight.")] = 1,
    launcher: Annotated[str, typer.Option(
        "--launcher", help="local (this machine) or submitit (the launcher config group: local or slurm).")] = "local",
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed cells again.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit without running.")] = False,
    plot: Annotated[bool, typer.Option(help="Write frontier.png in the sweep folder (needs pgolf[plot]).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-cell table as JSON on stdout and nothing "
                                                         "else there.")] = False,
) -> None:
    """Train and export a grid: one training per training-axis combination and seed, every export point re-exports
    its weights, --max-bytes adds a fit-budget per training. Resumable: re-running the same command runs only
    the missing cells (adding values to an axis extends the sweep). Results: run.root/sweeps/NAME/results.csv and
    results.parquet, after every cell.

    Examples: `pgolf sweep reg.weight_decay=0,0.04,0.09 export.prune=0,0.02,0.05 train.iterations=100`;
    `pgolf sweep reg.weight_decay=0,0.09 --seeds 3 --baseline reg.weight_decay=0 --max-bytes 420KB`;
    `pgolf sweep sweep=cpu_tune --jobs 2`.
    """
    from pgolf.sweep.launch import run_sweep
    from pgolf.sweep.plan import make_plan

    plan = make_plan(overrides or [], name=name, seeds=seeds,
                     max_bytes=C.parse_size(max_bytes) if max_bytes is not None else None,
                     margin=C.parse_size(margin), baseline=baseline)
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if dry_run:
        _print_plan(plan, as_json)
        return
    with RichProgress() as progress:
        outcome = run_sweep(plan, jobs=jobs, launcher=launcher, retry_failed=retry_failed, progress=progress,
                            echo=echo)
    _print_report([plan.folder], None, None, plan.folder / "frontier.png" if plot else None, as_json, False,
                  title=f"pgolf sweep: {plan.folder} ({len(outcome.ran)} trainings run now, "
                        f"{outcome.wall_time_s:.0f} s)")


def _print_plan(plan, as_json: bool) -> None:
    from pgolf.sweep.plan import plan_summary

    summary = plan_summary(plan)
    cells = summary["cells"]
    if as_json:
        print_json(summary)
        return
    from pgolf.results.tables import plan_table

    out.print(plan_table(plan, cells))
    fits = f", {summary['fit_budgets']} fit-budgets at {plan.max_bytes:,} bytes" if plan.max_bytes else ""
    out.print(f"{summary['trainings']} trainings ({sum(c['finished'] for c in cells)} finished), "
              f"{summary['exports_per_training']} export points per training{fits}; {summary['rows']} result rows. "
              f"Export points: {', '.join(summary['points'])}. Base: {' '.join(plan.base) or '(defaults)'}")


def _print_report(paths: list[Path], by: list[str] | None, max_bytes: int | None, plot_path: Path | None,
                  as_json: bool, as_csv: bool, title: str, baseline: list[str] | None = None) -> None:
    from pgolf.errors import MissingExtraError
    from pgolf.results.report import build_report, parse_baseline
    from pgolf.results.tables import cells_table, csv_text, json_text, plot_frontier

    rep = build_report(paths, by=by, baseline=parse_baseline(baseline) if baseline else None, max_bytes=max_bytes)
    if as_json:
        sys.stdout.write(json_text(rep.cells))
    elif as_csv:
        sys.stdout.write(csv_text(rep.cells))
    else:
        out.print(cells_table(rep.cells, rep.keys, rep.max_bytes, title))
    if plot_path is not None:
        try:
            plot_frontier(rep.cells, plot_path, rep.max_bytes, rep.keys)
            echo(f"plot: {plot_path}")
        except MissingExtraError as exc:
            echo(f"no plot: {exc}")


@app.command()
def search(
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Base overrides and the space in Hydra's sweeper grammar: key=interval(a,b), "
             "key='tag(log, interval(a,b))', key=range(a,b), key=choice(x,y) or key=x,y; search=NAME adds "
             "conf/search/NAME.yaml. Training and export keys both (export keys re-export, never retrain).",
        show_default=False)] = None,
    trials: Annotated[int | None, typer.Option(
        "--trials", help="Trials in the study, counting earlier runs of it (default 20 unless --time is given).",
        show_default=False)] = None,
    time_limit: Annotated[str | None, typer.Option(
        "--time", help="Start no trial after this long, e.g. 2h, 30m, 600s.", show_default=False)] = None,
    max_bytes: Annotated[str | None, typer.Option(
        "--max-bytes", help="Objective: fit-budget's round-trip val_bpb at this total budget, e.g. 16MB (default: "
                            "the trial's own round-trip val_bpb).", show_default=False)] = None,
    margin: Annotated[str, typer.Option("--margin", help="Safety margin kept below --max-bytes.")] = "0",
    finalists: Annotated[int, typer.Option(
        "--finalists", help="Re-run the K best configs and the baseline (the space's defaults) with --seeds seeds.")
    ] = 3,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per finalist (seed, seed+1, ...).")] = 3,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe or random.")] = "tpe",
    pruner: Annotated[str, typer.Option(
        "--pruner", help="asha (successive halving), hyperband or none: stops trials whose rung score (at 1/9 and "
                         "1/3 of training) trails.")] = "asha",
    proxy: Annotated[str, typer.Option(
        "--proxy", help="The rung score the pruner sees: val (val_bpb at the rung) or cooldown (a short LR decay "
                        "branched from the rung's checkpoint, then the round trip).")] = "val",
    measure_proxies: Annotated[bool, typer.Option(
        "--measure-proxies", help="Also branch the cooldown at every rung, so the report correlates both rung "
                                  "scores with the objective.")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="Study folder under run.root/searches (default: derived from the space, so the same command "
                       "resumes the same study).", show_default=False)] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Worker processes sharing the study (torch threads = cores / "
                                                     "jobs); with submitit, jobs.")] = 1,
    launcher: Annotated[str, typer.Option(
        "--launcher", help="local (this machine) or submitit (the launcher config group: local or slurm).")] = "local",
    plot: Annotated[bool, typer.Option(help="Write objective.png in the study folder (needs pgolf[plot]).")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Search hyperparameters with Optuna (TPE, successive halving), stopping losing trainings at their rungs.

    Every trial is a run directory in run.root/searches/NAME/trials/; the study is Optuna's journal there, so
    re-running the command resumes it and several processes or submitit jobs share it. Then the best --finalists
    configs and the baseline run with --seeds seeds. Needs the search extra (optuna).

    Examples: `pgolf search 'train.matrix_lr=tag(log, interval(0.01, 0.1))' reg.ema_decay=0,0.98 --trials 30`;
    `pgolf search search=tiny --time 30m --max-bytes 420KB`; `pgolf report runs/searches/NAME`.
    """
    from pgolf.search.run import make_settings, parse_duration, run_search

    settings = make_settings(overrides or [], name=name, trials=trials,
                             time_s=parse_duration(time_limit) if time_limit is not None else None,
                             max_bytes=C.parse_size(max_bytes) if max_bytes is not None else None,
                             margin=C.parse_size(margin), finalists=finalists, seeds=seeds, sampler=sampler,
                             pruner=pruner, proxy=proxy, measure_proxies=measure_proxies, jobs=jobs, launcher=launcher)
    with RichProgress() as progress:
        run_search(settings, progress=progress, echo=echo)
    folder = Path(settings.folder)
    _print_search_report(folder, folder / "objective.png" if plot else None, as_json, False)


def _print_search_report(folder: Path, plot_path: Path | None, as_json: bool, as_csv: bool) -> None:
    from pgolf.errors import MissingExtraError
    from pgolf.results.search_report import (
        build_search_report,
        counts_line,
        importances_table,
        plot_objective,
        proxies_table,
        search_json,
        trials_table,
    )
    from pgolf.results.tables import cells_table, csv_text

    rep = build_search_report(folder)
    keys = list(rep.summary.get("settings", {}).get("space", {}).get("params", {}))
    if as_json:
        print_json(search_json(rep))
    elif as_csv:
        sys.stdout.write(csv_text(rep.trials))
    else:
        out.print(trials_table(rep.trials, keys, f"pgolf search: {folder}"))
        out.print(proxies_table(rep.proxies))
        out.print(importances_table(rep.summary))
        if rep.finalists is not None:
            out.print(cells_table(rep.finalists.cells, rep.finalists.keys, rep.finalists.max_bytes,
                                  "finalists: the best configs and the baseline, re-run with seeds"))
        out.print(counts_line(rep.summary, rep.trials))
    if plot_path is not None:
        try:
            plot_objective(rep.trials, plot_path, title=str(folder))
            echo(f"plot: {plot_path}")
        except MissingExtraError as exc:
            echo(f"no plot: {exc}")


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(
        help="Sweep folders, run directories or folders of runs (any set of runs becomes one table).")],
    by: Annotated[list[str] | None, typer.Option(
        "--by", help="Group by this config key (repeat for several; default: the swept keys, or the keys whose "
                     "values differ between the runs). Seeds are aggregated within a group.",
        show_default=False)] = None,
    baseline: Annotated[list[str] | None, typer.Option(
        "--baseline", help="KEY=VALUE of the baseline cell (repeat for several keys; default: the sweep's, else the "
                           "first cell).", show_default=False)] = None,
    max_bytes: Annotated[str | None, typer.Option(
        "--max-bytes", help="Budget line and headroom (default: the sweep's --max-bytes, else 16MB).",
        show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of val_bpb against total bytes (needs "
                                                             "pgolf[plot]).", show_default=False)] = None,
    as_json: JsonFlag = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the per-cell table as CSV on stdout and nothing else "
                                                       "there.")] = False,
) -> None:
    """One table of any set of runs: one row per cell (seeds aggregated: mean, std, n), the delta against the
    baseline cell with one-sided Welch and paired t-test p-values, bytes and headroom, the Pareto frontier of
    round-trip val_bpb against total bytes marked, the budget line.

    Examples: `pgolf report runs/sweeps/NAME`; `pgolf report runs/ --by reg.weight_decay --plot wd.png`;
    `pgolf report runs/sweeps/NAME --csv > cells.csv`.
    """
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot} must be a .png file")
    if len(paths) == 1 and (paths[0] / "search.yaml").is_file():  # a search: its trials, proxies and finalists
        _print_search_report(paths[0], plot, as_json, as_csv)
        return
    _print_report(paths, by, C.parse_size(max_bytes) if max_bytes is not None else None, plot, as_json, as_csv,
                  title=f"pgolf report: {', '.join(map(str, paths))}", baseline=baseline)


@app.command()
def audit(
    folder: Annotated[Path, typer.Argument(help="A records folder (train_gpt.py, train logs, submission.json), "
                                                "pgolf-made or not.")],
    against: Annotated[Path | None, typer.Option(
        "--against", help="The record it claims to beat (a records folder): improvement in nats and the one-sided "
                          "Welch p against the README's rule (>= 0.005 nats at p < 0.01).", show_default=False)] = None,
    against_bpb: Annotated[float | None, typer.Option(
        "--against-bpb", help="The val_bpb it claims to beat, when there is no folder to compare seeds with.",
        show_default=False)] = None,
    tokenizer: Annotated[Path | None, typer.Option(
        "--tokenizer", help="SentencePiece model for the byte-LUT check (default: the folder's own .model, or one its "
                            "README names).", show_default=False)] = None,
    text: Annotated[Path | None, typer.Option(
        "--text", help="Text file the LUT counts bytes of (default: 200,000 characters of the built-in corpus).",
        show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a records folder against the challenge's rules, offline: bytes (code the script imports or execs,
    artifact, 16,000,000), seeds and significance, training and eval time, the byte LUT, hygiene; a pgolf folder's
    artifact is scored again. One row per check: pass, fail, warn or unknown, with the file and line. Exit 4 when
    a check fails.

    Examples: `pgolf audit records/my_run`; `pgolf audit records/new --against records/previous_best`;
    `pgolf audit records/new --against-bpb 1.0810 --tokenizer data/tokenizers/fineweb_1024_bpe.model --json`.
    """
    from pgolf.audit.audit import audit_folder
    from pgolf.errors import AuditFailed
    from pgolf.results.tables import column, render

    report = audit_folder(folder, against, against_bpb, tokenizer, text)
    if as_json:
        print_json(report.as_dict())
    else:
        import pandas as pd

        styles = {"fail": "red", "warn": "yellow", "unknown": "dim"}
        out.print(render(pd.DataFrame([row.as_dict() for row in report.rows]),
                         [column(name, justify="left") for name in ("check", "item", "verdict", "detail", "evidence")],
                         title=f"pgolf audit: {folder}", row_style=lambda row: styles.get(row["verdict"])))
    if report.failed:
        raise AuditFailed(f"{folder}: {len(report.failed)} checks fail: "
                          + ", ".join(sorted({f"{row.check} ({row.item})" for row in report.failed})))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, map expected failures to one line and an exit code."""
    try:
        code = app(args=argv, standalone_mode=False)
    except PgolfError as exc:
        if os.environ.get("PGOLF_DEBUG"):
            traceback.print_exc()
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("error: interrupted", highlight=False, markup=False, soft_wrap=True)
        sys.exit(Interrupted.exit_code)
    except KeyboardInterrupt:
        err.print("error: interrupted", highlight=False, markup=False, soft_wrap=True)
        sys.exit(Interrupted.exit_code)
    except typer.TyperException as exc:
        err.print(f"error: {exc.format_message()}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
