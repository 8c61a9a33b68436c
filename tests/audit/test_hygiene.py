from pgolf.audit.code import analyse
from pgolf.audit.hygiene import hygiene_rows

from .conftest import make_folder

README = "# run\n\n```\nSEED=42 LR=0.05 WARMUP=20 torchrun --nproc_per_node=8 train_gpt.py\n```\nNOT=1 outside\n"


def test_network_subprocess_and_readme_only_settings_warn_with_their_lines(tmp_path):
    script = ("import os, subprocess as sp\nimport urllib.request\n"
              "LR = float(os.environ.get('LR', '0.04'))\nWARMUP = int(os.environ.get('WARMUP', '20'))\n"
              "sp.run(['nvidia-smi'])\n")
    root = make_folder(tmp_path / "r", script)
    rows = hygiene_rows(analyse(root, root / "train_gpt.py"), README)
    assert [(r.item, r.verdict, r.evidence) for r in rows] == [
        ("network import", "warn", "train_gpt.py:2"), ("subprocess", "warn", "train_gpt.py:5"),
        ("env defaults", "warn", "train_gpt.py:3")]
    assert "LR=0.05 (default '0.04')" in rows[2].detail and "WARMUP" not in rows[2].detail


def test_a_clean_script_passes(tmp_path):
    root = make_folder(tmp_path / "r", "import os\nSEED = int(os.environ.get('SEED', '42'))\n")
    assert [r.verdict for r in hygiene_rows(analyse(root, root / "train_gpt.py"), README)] == ["pass"]
