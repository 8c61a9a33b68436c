"""What a records folder holds: the script, the train logs, submission.json, tokenizers, artifacts.

Logs are `train*.log` and `train*.txt` anywhere in the folder (records keep them in `logs/` or `log/` too);
when there are none, any `*.log` or `*log*.txt`. Byte-identical logs count once (some records ship the
same run as `train.log` and `train_seed1337.log`). A submission.json that is not JSON, or a folder without
train_gpt.py or without logs, is a DataError (exit 1).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pgolf.errors import DataError

SCRIPT = "train_gpt.py"
_NOT_LOGS = {"requirements.txt"}


@dataclass(frozen=True)
class Folder:
    root: Path
    script: Path
    logs: list[Path]
    submission: dict | None
    readme: str
    tokenizers: list[Path]
    """SentencePiece models in the folder (LFS pointers left out), then any the README names that exist."""

    def name(self, path: Path) -> str:
        """`path` relative to the folder, as rows show it."""
        return path.relative_to(self.root).as_posix()

    @property
    def is_pgolf(self) -> bool:
        """Written by `pgolf pack`: it ships final_model.pgolf, which its train_gpt.py can score again."""
        return (self.root / "final_model.pgolf").is_file()


def read_folder(root: Path | str) -> Folder:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    script = root / SCRIPT
    if not script.is_file():
        raise DataError(f"{root} has no {SCRIPT}: not a records folder")
    readme_path = root / "README.md"
    readme = readme_path.read_text(errors="replace") if readme_path.is_file() else ""
    return Folder(root, script, find_logs(root), _submission(root), readme, _tokenizers(root, readme))


def find_logs(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _NOT_LOGS)
    logs = [p for p in files if re.fullmatch(r"train.*\.(log|txt)", p.name)]
    if not logs:
        logs = [p for p in files if p.suffix == ".log" or (p.suffix == ".txt" and "log" in p.name)]
    if not logs:
        raise DataError(f"{root} has no train logs (train*.log)")
    seen, unique = set(), []
    for path in logs:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(path)
    return unique


def _submission(root: Path) -> dict | None:
    path = root / "submission.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a JSON object")
    return data


def _is_model(path: Path) -> bool:
    with open(path, "rb") as fh:
        return not fh.read(40).startswith(b"version https://git-lfs")


def _tokenizers(root: Path, readme: str) -> list[Path]:
    found = [p for p in sorted(root.rglob("*.model")) if _is_model(p)]
    for name in re.findall(r"[\w./-]+\.model\b", readme):
        path = (root / name).resolve()
        if path.is_file() and path not in found and _is_model(path):
            found.append(path)
    return found
