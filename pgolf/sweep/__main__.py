"""One rank of a multi-process sweep cell, started by torchrun (`python -m pgolf.sweep CELL_SPEC`)."""

import json
import sys
from pathlib import Path

from pgolf.sweep.cells import CellSpec, run_cell

run_cell(CellSpec(**json.loads(Path(sys.argv[1]).read_text())))
