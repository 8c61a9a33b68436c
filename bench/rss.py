"""Resident-set memory of this process (Linux /proc): a high-water mark that can be reset."""

from __future__ import annotations

from pathlib import Path


def status_kb(field: str) -> int | None:
    """A /proc/self/status field in kB (VmRSS, VmHWM, ...), or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> int | None:
    """Reset the high-water mark to the current RSS; returns that RSS in kB (None if unsupported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return status_kb("VmRSS")


def peak_mb_since(before_kb: int | None) -> float:
    """MB the high-water mark rose above `before_kb` (NaN if unsupported)."""
    peak_kb = status_kb("VmHWM")
    return (peak_kb - before_kb) / 1024 if before_kb is not None and peak_kb is not None else float("nan")
