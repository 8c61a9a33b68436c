"""Does `pgolf search` beat a grid at equal compute? The tiny model on the built-in corpus, a 5-dimensional space
(conf/search/tiny.yaml: matrix LR, embed LR, weight decay, EMA decay, warmdown), the same wall-clock budget for
each method, run one after another on this machine:

1. grid: 2 levels (the 1/4 and 3/4 points of each range, log ranges in log space) on as many dimensions as the
   budget affords one full training each (measured first), the rest at their defaults; no pruning;
2. random search, no pruning;
3. TPE with the default pruner (ASHA at 1/9 and 1/3 of training).
Then each method's best config is re-run at 3 seeds (its own run is the first) and compared. A fourth, smaller
study (random, no pruning, --measure-proxies) measures how well each rung score ranks trials: the Spearman
correlation of the rung's val_bpb and of the cooldown branch with the finished trials' objective.

  OMP_NUM_THREADS=1 python bench/bench_search.py --budget-min 30            # the issue's budget (1 h 41 min here)
  OMP_NUM_THREADS=1 python bench/bench_search.py --budget-min 9 --proxy-min 7   # what fits a shared 2-core box

Prints one table and writes bench_search.json in --out.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import optuna

from pgolf.results.search_report import proxy_correlations
from pgolf.search.run import make_settings, run_search
from pgolf.search.space import Param, parse_space
from pgolf.search.trial import run_trial

SPACE = ["search=tiny"]
ORDER = ["train.matrix_lr", "train.warmdown_steps", "train.embed_lr", "reg.ema_decay", "reg.weight_decay"]
"""The grid's dimensions, most likely to matter first (a grid of n cells covers log2(n) of them)."""


class FixedGrid(optuna.samplers.GridSampler):
    """Optuna's grid, without its study.stop() after the last cell (which only works inside study.optimize)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid_levels(param: Param) -> list:
    """The 1/4 and 3/4 points of the range (in log space for log ranges)."""
    if param.kind == "choice":
        return param.choices[:2]
    lo, hi = (math.log(param.low), math.log(param.high)) if param.log else (param.low, param.high)
    points = [lo + f * (hi - lo) for f in (0.25, 0.75)]
    points = [math.exp(p) for p in points] if param.log else points
    return [int(round(p)) for p in points] if param.kind == "int" else points


def default_value(param: Param):
    return int(param.default) if param.kind == "int" else float(param.default)


def method(name: str, base: list[str], budget_s: float, out: Path, **kw) -> dict:
    settings = make_settings(SPACE + base, name=name, time_s=budget_s, finalists=0, **kw.pop("settings", {}))
    started = time.perf_counter()
    outcome = run_search(settings, echo=lambda line: print(f"  {name}: {line}", flush=True), **kw)
    wall = time.perf_counter() - started
    summary = json.loads((Path(settings.folder) / "search.json").read_text())
    trials = outcome.trials
    return {"name": name, "settings": settings, "trials": trials, "wall_s": wall, "summary": summary,
            "started": int((~trials["stale"].astype(bool)).sum()),
            "finished": int(trials["state"].eq("complete").sum()),
            "pruned": int(trials["state"].eq("pruned").sum()), "best": summary["best"]}


def rerun(result: dict, seeds: list[int]) -> list[float]:
    """The method's best config at `seeds` (its own seed reuses the trial's training)."""
    setup = result["settings"].trial_setup()
    values = {k: str(v) for k, v in result["best"]["values"].items()}
    return [run_trial(setup, values, seed).objective for seed in seeds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=30.0, help="wall-clock minutes per method")
    ap.add_argument("--proxy-min", type=float, default=15.0, help="minutes of the proxy-measuring study")
    ap.add_argument("--data", default="data/builtin")
    ap.add_argument("--out", default="runs/bench_search")
    ap.add_argument("--override", action="append", default=[], help="a base override on top of the space's "
                                                                     "(repeat), e.g. train.iterations=60")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    base = [f"data.dir={args.data}", f"data.tokenizer={args.data}/tokenizer.model", f"run.root={out}", *args.override]
    budget_s = args.budget_min * 60
    space = parse_space(SPACE + base)
    params = {p.key: p for p in space.params}

    probe = time.perf_counter()  # one training at the defaults: what a grid cell costs
    setup = make_settings(SPACE + base, name="probe", pruner="none").trial_setup()
    run_trial(setup, {k: p.default for k, p in params.items()}, 1337)
    cell_s = time.perf_counter() - probe
    dims = max(1, min(len(ORDER), int(math.log2(max(2, budget_s // cell_s)))))
    grid = {k: (grid_levels(params[k]) if i < dims else [default_value(params[k])]) for i, k in enumerate(ORDER)}
    print(f"one training: {cell_s:.0f} s; grid: 2 levels on {dims} dimensions ({2 ** dims} cells)", flush=True)

    results = [
        method("grid", base, budget_s, out, sampler=FixedGrid(grid, seed=0),
               settings={"pruner": "none", "trials": 2 ** dims}),
        method("random", base, budget_s, out, settings={"sampler": "random", "pruner": "none"}),
        method("tpe-asha", base, budget_s, out, settings={"sampler": "tpe", "pruner": "asha"}),
    ]
    seeds = [1337, 1338, 1339]
    for result in results:
        result["rerun"] = rerun(result, seeds)
    proxy = method("proxies", base, args.proxy_min * 60, out,
                   settings={"sampler": "random", "pruner": "none", "measure_proxies": True})
    correlations = proxy_correlations(proxy["trials"])
    random_corr = proxy_correlations(results[1]["trials"])

    print(f"\nbudget {args.budget_min:g} min per method (wall clock, OMP_NUM_THREADS=1); one training {cell_s:.0f} s")
    print(f"{'method':10} {'started':>7} {'finished':>8} {'pruned':>6} {'wall s':>7} {'overhead':>8} "
          f"{'best found':>10} {'3-seed mean':>11} {'std':>7}")
    for r in results:
        s = r["summary"]
        mean, std = statistics.mean(r["rerun"]), statistics.stdev(r["rerun"])
        print(f"{r['name']:10} {r['started']:7d} {r['finished']:8d} {r['pruned']:6d} {r['wall_s']:7.0f} "
              f"{s['overhead']:8.2%} {r['best']['objective']:10.4f} {mean:11.4f} {std:7.4f}")
    for r in results:
        print(f"  {r['name']} best: {r['best']['values']}; re-runs {[round(x, 4) for x in r['rerun']]}")
    print(f"\nrung proxies (random search with --measure-proxies, {int(proxy['finished'])} finished trials):")
    print(correlations.to_string(index=False))
    print(f"\nrung val_bpb in the random-search method ({results[1]['finished']} finished trials):")
    print(random_corr.to_string(index=False))
    report = {"budget_min": args.budget_min, "cell_s": cell_s, "grid": grid,
              "methods": [{k: v for k, v in r.items() if k not in ("settings", "trials")} for r in results],
              "proxies": correlations.to_dict("records"), "random_proxies": random_corr.to_dict("records")}
    (out / "bench_search.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
