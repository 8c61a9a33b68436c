"""pgolf folders (written by `pgolf pack`): score the shipped artifact again with the shipped script,
`python train_gpt.py --eval final_model.pgolf` in the folder, on the val tokens its packed config names
(DATA_PATH and the other variables the script reads still apply), and compare the printed `val_bpb:` with
submission.json: its first seed's score, the one whose artifact the folder ships.
"""

from __future__ import annotations

import re
import subprocess
import sys

from pgolf.audit.folder import Folder
from pgolf.audit.rows import FAIL, PASS, UNKNOWN, Row

REPLAY_TIMEOUT_S = 600
TOLERANCE_BPB = 1e-4
"""Same artifact, same val tokens: only the device's arithmetic differs."""
_SCORE = re.compile(r"^val_bpb:(\d+(?:\.\d+)?)\s*$", re.MULTILINE)


def claimed_bpb(submission: dict) -> float | None:
    seeds = submission.get("seed_results")
    if isinstance(seeds, list) and seeds and isinstance(seeds[0], dict):
        return seeds[0].get("val_bpb")
    return submission.get("val_bpb")


def replay_row(folder: Folder) -> Row:
    command = [sys.executable, "train_gpt.py", "--eval", "final_model.pgolf"]
    try:
        proc = subprocess.run(command, cwd=folder.root, capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Row("replay", "final_model.pgolf", UNKNOWN, f"--eval took over {REPLAY_TIMEOUT_S} s")
    scores = _SCORE.findall(proc.stdout)
    if proc.returncode != 0 or not scores:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        return Row("replay", "final_model.pgolf", UNKNOWN,
                   f"train_gpt.py --eval exited {proc.returncode}: {lines[-1] if lines else 'no output'}")
    printed = float(scores[-1])
    claimed = claimed_bpb(folder.submission or {})
    if not isinstance(claimed, int | float):
        return Row("replay", "final_model.pgolf", UNKNOWN, f"prints val_bpb {printed}; submission.json claims none")
    return Row("replay", "final_model.pgolf", PASS if abs(printed - claimed) <= TOLERANCE_BPB else FAIL,
               f"train_gpt.py --eval prints val_bpb {printed:.8f}; submission.json claims {claimed:.8f} "
               f"({printed - claimed:+.2e})", "train_gpt.py --eval final_model.pgolf")
