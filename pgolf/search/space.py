"""The search space: Hydra's sweeper grammar parsed into parameters, checked against the schema before anything
runs.

Grammar (as the Optuna sweeper for Hydra reads it), per `key=VALUE`:
- `interval(a, b)`: a float in [a, b]; an integer when the key is an int field of the schema;
- `tag(log, interval(a, b))`: the same, sampled on a log scale (a and b must be > 0);
- `range(a, b[, step])`: the numbers a, a+step, ... below b, as Python's and Hydra's grid `range` (the Optuna
  sweeper makes b inclusive; here `range` means the same in `pgolf sweep` and `pgolf search`);
- `choice(x, y, ...)` or `x,y,...`: one of the listed values (config groups too: `model=tiny,records_tiny`).
Any other `key=value` is a base override, the same in every trial. `search=NAME` adds conf/search/NAME.yaml
(`params`: key -> VALUE, `overrides`: base overrides); a key also given on the command line keeps that value.

A parameter's default (the baseline the finalists are compared with) is the key's value in the base config; a
plain `key=value` beside the key's range sets it (and is not otherwise applied).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from pgolf import config as C
from pgolf.errors import ConfigError

TRAINING_ROOTS = ("model", "train", "reg", "data")
"""Config roots whose values change the trained weights: a trial with new values trains."""

EXPORT_ROOTS = ("export",)
"""Config roots that only change the export: a trial re-exports a training's weights."""

_CALL = re.compile(r"^\s*(interval|range|choice|tag|shuffle|glob)\s*\((.*)\)\s*$", re.S)


@dataclass
class Param:
    """One searched key: a float or int range (optionally log) or a list of choices (override strings)."""

    key: str
    kind: str
    """float, int or choice."""
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: list[str] | None = None
    default: str = ""
    """The key's value in the base config, as an override string."""
    spec: str = ""
    """As written (`tag(log, interval(1e-4, 1e-2))`)."""

    @property
    def exports(self) -> bool:
        return _root(self.key) in EXPORT_ROOTS

    def value_text(self, value: Any) -> str:
        """An Optuna value as the override string a trial composes."""
        if self.kind == "int":
            return str(int(value))
        if self.kind == "float":
            return repr(float(value))
        return str(value)


@dataclass
class Space:
    base: list[str]
    """Overrides every trial shares."""
    params: list[Param]

    def record(self) -> dict[str, Any]:
        """What search.yaml keeps, and what a re-run must agree with."""
        return {"base": list(self.base), "params": {p.key: {k: v for k, v in asdict(p).items() if k != "key"}
                                                    for p in self.params}}


def _root(key: str) -> str:
    return key.split(".", 1)[0]


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    parts.append(cur.strip())
    return parts


def _number(text: str, item: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError as exc:
        raise ConfigError(f"{item!r}: {text!r} is not a number") from exc


def _args(body: str, names: tuple[str, ...], item: str) -> dict[str, str]:
    """Positional and keyword arguments of a call, by name."""
    out: dict[str, str] = {}
    for i, arg in enumerate(a for a in _split_top(body) if a):
        name, sep, value = arg.partition("=")
        if sep and name.strip() in names:
            out[name.strip()] = value.strip()
        elif i < len(names):
            out[names[i]] = arg
        else:
            raise ConfigError(f"{item!r}: unexpected argument {arg!r}")
    return out


def is_search_value(value: str) -> bool:
    """Whether an override's value is a search range or list (not a plain value, a [list] or a {dict})."""
    value = value.strip()
    if value.startswith(("[", "{")):
        return False
    return bool(_CALL.match(value)) or len(_split_top(value)) > 1


def parse_param(key: str, value: str, int_field: bool) -> Param:
    """One `key=VALUE` of the grammar above; a one-line ConfigError for anything else."""
    item = f"{key}={value}"
    tags: list[str] = []
    match = _CALL.match(value)
    while match and match.group(1) == "tag":
        parts = _split_top(match.group(2))
        tags += [t.strip() for t in parts[:-1]]
        match = _CALL.match(parts[-1])
    if match is None:
        if tags:
            raise ConfigError(f"{item!r}: tag(...) must wrap interval(a, b)")
        return Param(key, "choice", choices=list(dict.fromkeys(_split_top(value))), spec=value)
    fn, body = match.group(1), match.group(2)
    unknown_tags = [t for t in tags if t != "log"]
    if unknown_tags:
        raise ConfigError(f"{item!r}: unknown tag {unknown_tags[0]!r} (only log)")
    if tags and fn != "interval":
        raise ConfigError(f"{item!r}: tag(log, ...) applies to interval(a, b), not {fn}()")
    if fn in ("shuffle", "glob"):
        raise ConfigError(f"{item!r}: {fn}() is not a search range; use interval, range or choice")
    if fn == "choice":
        choices = list(dict.fromkeys(a for a in _split_top(body) if a))
        if not choices:
            raise ConfigError(f"{item!r}: choice() lists no values")
        return Param(key, "choice", choices=choices, spec=value)
    if fn == "interval":
        args = _args(body, ("start", "end"), item)
        if set(args) != {"start", "end"}:
            raise ConfigError(f"{item!r}: interval needs a low and a high bound, e.g. interval(0.01, 0.1)")
        low, high = (_number(args[k], item) for k in ("start", "end"))
        if not low < high:
            raise ConfigError(f"{item!r}: interval's low bound {low} must be below its high bound {high}")
        log = "log" in tags
        if log and low <= 0:
            raise ConfigError(f"{item!r}: tag(log, ...) needs bounds > 0, got {low}")
        if int_field:
            if low != int(low) or high != int(high):
                raise ConfigError(f"{item!r}: {key} is an integer; give integer bounds")
            return Param(key, "int", low=int(low), high=int(high), log=log, spec=value)
        return Param(key, "float", low=float(low), high=float(high), log=log, spec=value)
    args = _args(body, ("start", "stop", "step"), item)  # range
    if "stop" not in args:
        args = {"start": "0", "stop": args.get("start", "")} if "start" in args else {}
    if "stop" not in args:
        raise ConfigError(f"{item!r}: range needs a stop, e.g. range(1, 5)")
    start, stop = _number(args["start"], item), _number(args["stop"], item)
    step = _number(args.get("step", "1"), item)
    if step <= 0 or not start < stop:
        raise ConfigError(f"{item!r}: range needs start < stop and step > 0")
    count = math.ceil((stop - start) / step)
    last = start + (count - 1) * step
    if all(isinstance(v, int) for v in (start, stop, step)):
        if count < 2:
            return Param(key, "choice", choices=[str(start)], spec=value)
        return Param(key, "int", low=start, high=last, step=step, spec=value)
    if int_field:
        raise ConfigError(f"{item!r}: {key} is an integer; give an integer range")
    return Param(key, "float", low=float(start), high=float(last), step=float(step), spec=value)


def load_search_file(name: str) -> tuple[list[str], list[str]]:
    """(base overrides, parameter overrides) of conf/search/NAME.yaml (`C.read_params_file`)."""
    overrides, params = C.read_params_file("search", name)
    return overrides, [f"{k}=choice({','.join(map(str, v))})" if isinstance(v, list) else f"{k}={v}"
                       for k, v in params.items()]


def expand_search_file(overrides: list[str]) -> list[str]:
    """Replace `search=NAME` by its file's overrides; a key also given on the command line keeps that value."""
    return C.expand_named_file(overrides, "search", load_search_file)


def _lookup(cfg_dict: dict[str, Any], key: str) -> Any:
    node: Any = cfg_dict
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _group_default(key: str, base: list[str]) -> str:
    """A config group's option in the base: its override, else conf/config.yaml's defaults list."""
    for item in base:
        if C.override_key(item) == key:
            return item.partition("=")[2]
    defaults = C.load_plain_yaml(C.conf_dir() / "config.yaml").get("defaults") or []
    return next((str(d[key]) for d in defaults if isinstance(d, dict) and key in d), "")


def parse_space(overrides: list[str]) -> Space:
    """Base overrides and parameters; every parameter's bounds or choices composed with the base, so an unknown
    key or a value of the wrong type is a ConfigError before any trial runs."""
    items = expand_search_file(list(overrides))
    base, raw, seen = [], [], set()
    for item in items:
        key, sep, value = item.partition("=")
        key = C.override_key(item)
        if not sep:
            raise ConfigError(f"bad override {item!r}: expected key=value")
        kind = (key, is_search_value(value))
        if kind in seen:
            raise ConfigError(f"{key} is given twice; give each key once (a plain value beside a range sets its "
                              "default)")
        seen.add(kind)
        if is_search_value(value):
            raw.append((key, value.strip()))
        else:
            base.append(item)
    if not raw:
        raise ConfigError("empty search space: give at least one key=interval(a,b), key=range(a,b), "
                          "key=choice(x,y) or key=x,y (or search=NAME)")
    base_cfg = C.compose(base)
    values = C.to_dict(base_cfg)
    searched = {key for key, _ in raw}
    base = [item for item in base if C.override_key(item) not in searched]  # kept only as those keys' defaults
    params = []
    for key, value in raw:
        if key == "seed" or _root(key) not in TRAINING_ROOTS + EXPORT_ROOTS:
            raise ConfigError(f"{key} cannot be searched: only {', '.join(TRAINING_ROOTS + EXPORT_ROOTS)} keys vary "
                              "between trials (seeds are the finalists' --seeds)")
        current = _lookup(values, key)
        if "." in key and current is None and key not in _known_none(values, key):
            raise ConfigError(f"{key} is not a config key (no such key in the schema)")
        int_field = isinstance(current, int) and not isinstance(current, bool)
        param = parse_param(key, value, int_field)
        plain = [i for i in items if not is_search_value(i.partition("=")[2])]
        param.default = _group_default(key, plain) if "." not in key else _default_text(current)
        params.append(param)
    for param in params:
        probes = param.choices if param.kind == "choice" else [param.value_text(param.low),
                                                                 param.value_text(param.high)]
        for probe in probes:
            C.compose(base + [f"{param.key}={probe}"])
    return Space(base, params)


def _known_none(values: dict[str, Any], key: str) -> set[str]:
    """`key` when its section holds it with the value None (a schema field whose default is null)."""
    section, _, name = key.rpartition(".")
    node = _lookup(values, section) if section else values
    return {key} if isinstance(node, dict) and name in node else set()


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)
