import base64
import lzma

import pytest

from pgolf.audit.code import analyse, env_defaults, runs_on_import
from pgolf.errors import DataError

from .conftest import make_folder


def test_a_file_the_script_execs_is_code_and_counts(tmp_path):
    script = 'exec(open(__file__.replace("train_gpt.py", "train_gpt_decode.py")).read())\n'
    inner = "x = 1\n" * 500
    root = make_folder(tmp_path / "r", script, files={"train_gpt_decode.py": inner, "notes.py": "unused = 1\n"})
    analysis = analyse(root, root / "train_gpt.py")
    assert [f.path.name for f in analysis.files] == ["train_gpt.py", "train_gpt_decode.py"]
    assert analysis.code_bytes == len(script.encode()) + len(inner.encode())
    assert analysis.files[1].reason.startswith("train_gpt.py:1 exec(")


def test_imports_of_folder_modules_are_followed_into_those_files(tmp_path):
    root = make_folder(tmp_path / "r", "import helper\nimport os\n",
                       files={"helper.py": "from deeper import f\n", "deeper.py": "def f(): pass\n", "os.txt": "x"})
    analysis = analyse(root, root / "train_gpt.py")
    assert [f.path.name for f in analysis.files] == ["train_gpt.py", "helper.py", "deeper.py"]


def test_a_self_extracting_script_is_decoded_and_what_its_code_imports_counts(tmp_path):
    inner = b'import helper\nimport os\nX = os.environ.get("LR", "0.04")\n'
    blob = base64.b85encode(lzma.compress(inner, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}]))
    script = (f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob.decode()}"),'
              f'format=L.FORMAT_RAW,filters=[{{"id":L.FILTER_LZMA2}}]))\n')
    root = make_folder(tmp_path / "r", script, files={"helper.py": "y = 2\n"})
    analysis = analyse(root, root / "train_gpt.py")
    assert [f.path.name for f in analysis.files] == ["train_gpt.py", "helper.py"]
    assert env_defaults(analysis) == {"LR": ("0.04", "train_gpt.py:2 (decoded)", 3)}


def test_a_script_that_runs_its_main_at_import_is_named(tmp_path):
    root = make_folder(tmp_path / "r", "def main():\n    pass\n\nraise SystemExit(main())\n")
    assert runs_on_import(analyse(root, root / "train_gpt.py")) == "train_gpt.py:4"
    guarded = make_folder(tmp_path / "g", "def main():\n    pass\n\nif __name__ == '__main__':\n    main()\n")
    assert runs_on_import(analyse(guarded, guarded / "train_gpt.py")) is None


def test_a_script_that_does_not_parse_is_a_data_error(tmp_path):
    root = make_folder(tmp_path / "r", "def broken(:\n")
    with pytest.raises(DataError, match="does not parse"):
        analyse(root, root / "train_gpt.py")
