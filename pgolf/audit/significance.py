"""Seeds and significance: each log's scored line, their mean and std in bpb and nats, the claim in
submission.json, and the README's rule against a previous record: >= 0.005 nats better at p < 0.01.

Nats come from the logs: val_loss is nats per token, and val_loss / val_bpb on the same line is the
nats-per-bpb ratio (ln 2 x bytes per token), so an improvement in bpb converts to nats with this folder's
ratio, which holds across tokenizers. The p-value is the one-sided Welch t-test that this folder's seeds
are lower than the record's (pgolf/results/report.py's, with the paired test over shared seeds beside
it); against a single number (--against-bpb) it is the one-sided one-sample t-test.
"""

from __future__ import annotations

import math
import statistics
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from pgolf.audit.folder import Folder
from pgolf.audit.logs import LogFacts
from pgolf.audit.rows import FAIL, PASS, UNKNOWN, WARN, Row, where
from pgolf.errors import DataError
from pgolf.results.report import _compare as compare_seeds

MIN_NATS = 0.005
MAX_P = 0.01
MIN_SEEDS = 3
CLAIM_SLACK_BPB = 1e-3
"""A claim this close to the logs' mean warns (rounded, or another stage's score); further off it fails."""


def scored(folder: Folder, logs: list[LogFacts]) -> list[LogFacts]:
    """The logs that print a scored line; none is a DataError (exit 1)."""
    found = [log for log in logs if log.val_bpb is not None]
    if not found:
        names = ", ".join(folder.name(log.path) for log in logs)
        raise DataError(f"no log in {folder.root} prints a scored line (val_loss and val_bpb): {names}")
    return found


def seed_summary(logs: list[LogFacts]) -> dict:
    bpb = [log.val_bpb.value for log in logs]
    nats = [log.val_loss.value for log in logs]
    ratios = [n / b for n, b in zip(nats, bpb) if b > 0]
    return {"n": len(bpb), "bpb_mean": statistics.fmean(bpb), "bpb_std": _std(bpb),
            "nats_mean": statistics.fmean(nats), "nats_std": _std(nats),
            "nats_per_bpb": statistics.fmean(ratios) if ratios else math.nan,
            "seeds": [[log.seed, log.val_bpb.value] for log in logs]}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def seed_rows(folder: Folder, logs: list[LogFacts], summary: dict) -> list[Row]:
    rows = [Row("seeds", folder.name(log.path), PASS, f"val_bpb {log.val_bpb.value} val_loss {log.val_loss.value}",
                where(folder.name(log.path), log.val_bpb.lineno, log.val_bpb.text)) for log in logs]
    s = summary
    rows.append(Row("seeds", "mean", PASS if s["n"] >= MIN_SEEDS else WARN,
                    f"n={s['n']}  bpb {s['bpb_mean']:.8f} ± {s['bpb_std']:.8f}  nats {s['nats_mean']:.8f} ± "
                    f"{s['nats_std']:.8f}  ({s['nats_per_bpb']:.5f} nats/bpb)"))
    claimed = (folder.submission or {}).get("val_bpb")
    if isinstance(claimed, int | float):
        decimals = min([len(repr(float(claimed)).partition(".")[2])] + [log.bpb_decimals for log in logs])
        diff = float(claimed) - s["bpb_mean"]
        slack = 0.5 * 10.0 ** -decimals + 1e-12
        verdict = PASS if abs(diff) <= slack else WARN if abs(diff) <= CLAIM_SLACK_BPB else FAIL
        rows.append(Row("seeds", "submission.json val_bpb", verdict,
                        f"claims {claimed}; the logs' mean is {s['bpb_mean']:.8f} ({diff:+.6f})", "submission.json"))
    else:
        rows.append(Row("seeds", "submission.json val_bpb", UNKNOWN, "no val_bpb in submission.json"))
    return rows


def significance_row(summary: dict, against: dict | None, against_bpb: float | None, against_name: str) -> Row:
    """The README's rule: this folder beats `against` (a record's seed summary, or one number) by >= 0.005
    nats at one-sided p < 0.01."""
    ours = summary
    base_mean = against["bpb_mean"] if against is not None else against_bpb
    gain_nats = (base_mean - ours["bpb_mean"]) * ours["nats_per_bpb"]
    scores = [bpb for _, bpb in ours["seeds"]]
    p_paired = math.nan
    if against is not None:
        result = compare_seeds(_cell(ours), _cell(against), is_base=False)
        p, p_paired = result["p_welch"], result["p_paired"]
        test = f"Welch over {len(scores)} vs {len(against['seeds'])} seeds"
    else:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            p = float(stats.ttest_1samp(scores, against_bpb, alternative="less").pvalue) if len(scores) >= 2 \
                else math.nan
        test = f"one-sample t over {len(scores)} seeds"
    detail = (f"{gain_nats:+.5f} nats ({base_mean - ours['bpb_mean']:+.6f} bpb) vs {against_name}; p={p:.3g} "
              f"({test}" + (f"; paired p={p_paired:.3g}" if not math.isnan(p_paired) else "") +
              f"); rule: >= {MIN_NATS} nats at p < {MAX_P}")
    if math.isnan(p):
        return Row("significance", against_name, UNKNOWN, detail + "; needs >= 2 seeds on each side")
    verdict = PASS if gain_nats >= MIN_NATS and p < MAX_P else FAIL
    return Row("significance", against_name, verdict, detail)


def _cell(summary: dict) -> dict:
    """A seed summary in the shape pgolf/results/report.py compares cells in."""
    by_seed = pd.Series([bpb for _, bpb in summary["seeds"]], index=[seed for seed, _ in summary["seeds"]], dtype=float)
    return {"bpb_mean": summary["bpb_mean"], "_scores": list(by_seed), "_by_seed": by_seed.groupby(level=0).mean()}
