"""One audit row: a check's verdict on one item, with the numbers and the evidence (file and line)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

PASS, FAIL, WARN, UNKNOWN = "pass", "fail", "warn", "unknown"


@dataclass(frozen=True)
class Row:
    check: str
    """Which check: bytes, seeds, significance, time, lut, sidecar, hygiene, replay."""
    item: str
    """What the verdict is about: `total train_seed42.log`, `code`, `submission.json`."""
    verdict: str
    detail: str
    """The numbers behind the verdict."""
    evidence: str = ""
    """Where they come from: `file:line text`."""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def where(name: str, lineno: int | None, text: str = "", width: int = 90) -> str:
    """`name:line text` with the text shortened to `width` characters."""
    text = " ".join(text.split())
    text = text if len(text) <= width else text[:width - 3] + "..."
    head = name if lineno is None else f"{name}:{lineno}"
    return f"{head} {text}".rstrip()
