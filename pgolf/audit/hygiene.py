"""Hygiene (warnings, never failures): network imports (the evaluation runs offline), subprocess calls,
and environment-variable defaults that differ from what the README's command sets (a run of the script
as it ships would not be the run the README reports).

The README's settings are the `NAME=value` words inside its code blocks.
"""

from __future__ import annotations

import re

from pgolf.audit.code import Analysis, env_defaults, network_imports, subprocess_calls
from pgolf.audit.rows import PASS, WARN, Row

_FENCE = re.compile(r"```.*?```", re.DOTALL)
_SETTING = re.compile(r"(?<![\w$-])([A-Z][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s\\;&|]+)")


def readme_settings(readme: str) -> dict[str, str]:
    found = {}
    for block in _FENCE.findall(readme):
        for name, value in _SETTING.findall(block):
            found.setdefault(name, value.strip("'\""))
    return found


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a.strip().rstrip("/") == b.strip().rstrip("/")


def hygiene_rows(analysis: Analysis, readme: str) -> list[Row]:
    rows = [Row("hygiene", "network import", WARN, f"imports {name}", f"{source}:{line}")
            for name, source, line in network_imports(analysis)]
    rows += [Row("hygiene", "subprocess", WARN, f"calls {call}", f"{source}:{line}")
             for call, source, line in subprocess_calls(analysis)]
    defaults = env_defaults(analysis)
    differ = [(name, value, *defaults[name]) for name, value in readme_settings(readme).items()
              if name in defaults and not _same(defaults[name][0], value)]
    if differ:
        rows.append(Row("hygiene", "env defaults", WARN,
                        f"{len(differ)} settings of the README's command differ from the script's defaults: "
                        + ", ".join(f"{name}={value} (default {default!r})" for name, value, default, _, _ in differ),
                        "; ".join(f"{source}:{line}" for _, _, _, source, line in differ[:5])
                        + ("; ..." if len(differ) > 5 else "")))
    return rows or [Row("hygiene", "all", PASS, "no network import, subprocess call or README-only setting")]
