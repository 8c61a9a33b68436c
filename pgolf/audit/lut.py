"""The byte LUT check: does the folder's own LUT builder count the bytes of the text its tokens decode to?

The script is loaded in a subprocess (pgolf/audit/probe.py says why and how); its builder's tables count
the bytes of a text (`--text`, default 200,000 characters of pgolf's built-in corpus) token by token, and
the total is compared with the UTF-8 bytes of the decoded text: canonical is a relative error of 0. The
first token whose count differs from the canonical one is the evidence (a double-counted space shows as
`▁the` counted 5 instead of 4).

A folder with a byte sidecar (CaseOps: the text is transformed before tokenizing and a sidecar holds each
token's bytes in the original text) is also checked against the original text's bytes. The sidecar's
counter is found by signature: a function of a folder module taking `(sp, original_text, transformed_text)`;
the transform is the `encode*` function that module calls.

Unknown, with the reason: no tokenizer (in the folder, named by its README, or `--tokenizer`), a script that
runs its main at import, a script that raises while it loads, no builder found, or the probe timing out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pgolf.audit.code import Analysis, imported_modules, runs_on_import
from pgolf.audit.folder import Folder
from pgolf.audit.rows import FAIL, PASS, UNKNOWN, Row

PROBE_TIMEOUT_S = 300
TEXT_MAX_CHARS = 200_000


def find_sidecar(root: Path) -> tuple[str, str, str] | None:
    """(module path, counter, transform) of a byte sidecar among the folder's modules, else None."""
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        transforms = [n.func.id for n in ast.walk(tree)
                      if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id.startswith("encode")]
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and transforms:
                names = [a.arg for a in node.args.args]
                if len(names) == 3 and "original" in names[1] and "transformed" in names[2]:
                    return str(path), node.name, transforms[0]
    return None


def lut_rows(folder: Folder, analysis: Analysis, tokenizer: Path | None, text: Path | None) -> list[Row]:
    tokenizer = tokenizer or (folder.tokenizers[0] if folder.tokenizers else None)
    if tokenizer is None:
        return [Row("lut", "-", UNKNOWN, "no tokenizer in the folder or its README; pass --tokenizer")]
    item = tokenizer.name
    on_import = runs_on_import(analysis)
    if on_import is not None:
        return [Row("lut", item, UNKNOWN, "the script runs its main at import: not loaded", on_import)]
    sidecar = find_sidecar(folder.root)
    request = {"folder": str(folder.root.resolve()), "script": str(folder.script.resolve()),
               "tokenizer": str(tokenizer.resolve()), "text": str(text.resolve()) if text else None,
               "max_chars": TEXT_MAX_CHARS, "sidecar": sidecar, "imports": sorted(imported_modules(analysis))}
    result = _run_probe(request)
    if "error" in result:
        return [Row("lut", item, UNKNOWN, result["error"])]
    rows = [_lut_row(item, result)]
    if sidecar is not None:
        rows.append(_sidecar_row(folder, sidecar, result.get("sidecar", {})))
    return rows


def _run_probe(request: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="pgolf-audit-") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request_path.write_text(json.dumps(request))
        try:
            proc = subprocess.run([sys.executable, "-m", "pgolf.audit.probe", str(request_path), str(result_path)],
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"error": f"loading the script took over {PROBE_TIMEOUT_S} s"}
        if not result_path.is_file():
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            return {"error": f"the probe exited {proc.returncode}: {lines[-1] if lines else 'no message'}"}
        return json.loads(result_path.read_text())


def _lut_row(item: str, result: dict) -> Row:
    status = result["status"]
    if status == "load_error":
        return Row("lut", item, UNKNOWN, f"the script raised while loading: {result['reason']}")
    if status == "no_builder":
        return Row("lut", item, UNKNOWN, "no build_sentencepiece_luts (or function reading is_byte and id_to_piece)")
    if status == "builder_error":
        return Row("lut", item, UNKNOWN, f"the builder failed: {result['reason']}", result["builder"])
    lut, utf8 = result["lut_bytes"], result["utf8_bytes"]
    detail = (f"LUT {lut:,} bytes vs decoded text {utf8:,} over {result['tokens']:,} tokens: relative error "
              f"{(lut - utf8) / utf8:+.4%}")
    first = result["first_difference"]
    if first is not None:
        detail += (f"; {result['differing_tokens']:,} tokens differ, first {first['piece']!r} (id {first['id']}) "
                   f"counts {first['lut']}, canonical {first['canonical']}")
    if result["canonical_bytes"] != utf8:
        detail += f"; canonical tables count {result['canonical_bytes']:,} (the tokenizer normalizes the text)"
    return Row("lut", item, PASS if lut == utf8 else FAIL, detail, result["builder"])


def _sidecar_row(folder: Folder, sidecar: tuple[str, str, str], result: dict) -> Row:
    path, counter, transform = sidecar
    item = f"{folder.name(Path(path))} {counter}"
    if "reason" in result or not result:
        return Row("sidecar", item, UNKNOWN, f"could not run: {result.get('reason', 'no result')}")
    counted, original = result["sidecar_bytes"], result["original_bytes"]
    return Row("sidecar", item, PASS if counted == original else FAIL,
               f"{counted:,} bytes counted for the {transform}-transformed text vs {original:,} in the original: "
               f"relative error {(counted - original) / original:+.4%}")
