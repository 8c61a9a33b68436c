"""The first lines the shipped `train_gpt.py` runs: unpack the bundled modules and hand over to `standalone.main`.

`pgolf pack` writes the script as `CONFIG = {...}`, `MODULES = {name: source}`
(`export/artifact` for pgolf/export/artifact.py in the readable script; in the
compact one a short key in one flat package, and this file's import of the
entry rewritten to match: pgolf/bundle/flat.py), this file's source and a call
of `run`. The modules are written to files
(numba caches its compiled kernels beside them) in a folder named by their
hash, once: several torchrun ranks may race to unpack, and the loser's copy is
discarded. `PGOLF_BUNDLE_DIR` chooses the parent folder (default: the system
temp folder). Nothing imports this module: it is the top of the shipped script.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path


def run(modules: dict, config: dict) -> int:
    """Unpack `modules` (path in the package without .py -> source), put them first on sys.path, run `config`."""
    digest = hashlib.sha256(json.dumps(modules, sort_keys=True).encode()).hexdigest()[:16]
    parent = Path(os.environ.get("PGOLF_BUNDLE_DIR") or tempfile.gettempdir())
    root = parent / f"pgolf-bundle-{digest}"
    if not root.is_dir():
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=parent))
        for name, text in modules.items():
            path = staging / "pgolf" / f"{name}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        try:
            staging.rename(root)
        except OSError:  # another rank unpacked the same bundle first
            shutil.rmtree(staging, ignore_errors=True)
    sys.path.insert(0, str(root))
    from pgolf.ship.standalone import main

    return main(config, sys.argv[1:])
