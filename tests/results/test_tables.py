"""tables.py: Pareto marks, rich rendering, CSV/parquet/JSON round trips, atomic writes, the plot."""

import io
import json
import math
import sys

import pandas as pd
import pytest
from rich.console import Console

from pgolf.errors import MissingExtraError
from pgolf.results import tables as T

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _text(renderable) -> str:
    console = Console(file=io.StringIO(), width=240, record=True)
    console.print(renderable)
    return console.export_text()


def test_pareto_front_marks_only_undominated_points():
    assert T.pareto_front([100, 200, 300, 250], [3.0, 2.5, 2.4, 2.6]) == [True, True, True, False]
    assert T.pareto_front([100, 100], [2.0, 2.0]) == [True, True]


def test_pareto_front_ignores_points_without_a_score():
    assert T.pareto_front([100, 50, 200], [2.0, math.nan, 1.9]) == [True, False, True]
    assert T.pareto_front([math.nan, 100], [1.0, 2.0]) == [False, True]


def test_formats():
    assert T.fmt_bytes(16_000_000) == "16,000,000" and T.fmt_bytes(None) == "-" and T.fmt_bytes(pd.NA) == "-"
    assert T.fmt_p(0.0123456) == "0.0123" and T.fmt_p(math.nan) == "-"
    assert T.fmt_delta(-0.00125) == "-0.0013" and T.fmt_bpb(1.23456) == "1.2346"


FIT_SUMMARY = {
    "max_bytes": 400_000, "margin": 1000, "limit_bytes": 399_000, "search_val_tokens": 8192,
    "search_val_bpb_float": 2.0, "bpb_evaluations": 5, "wall_time_s": 12.0, "label": "e8 q6 [i3=7]",
    "val_tokens": 16384, "bytes": {"model": 350_000, "code": 47_642, "total": 397_642}, "headroom_bytes": 1358,
    "val_bpb": 2.0, "val_bpb_roundtrip": 2.01,
    "candidates": [
        {"config": "e6 q6", "origin": "uniform", "predicted_model_bytes": 300_000, "measured_model_bytes": None,
         "code_bytes": 47_642, "total_bytes": 347_642, "headroom_bytes": 51_358, "bytes_basis": "predicted",
         "val_bpb": 2.05, "delta_bpb": 0.05, "proxy": 2.0, "frontier": True, "chosen": False},
        {"config": "e8 q6 [i3=7]", "origin": "proxy+bits", "predicted_model_bytes": 349_871,
         "measured_model_bytes": 350_000, "code_bytes": 47_642, "total_bytes": 397_642, "headroom_bytes": 1358,
         "bytes_basis": "measured", "val_bpb": 2.01, "delta_bpb": 0.01, "proxy": 1.0, "frontier": True,
         "chosen": True},
    ],
}


def test_fit_table_escapes_labels_and_prints_exact_bytes():
    text = _text(T.fit_table(FIT_SUMMARY))
    assert "e8 q6 [i3=7]" in text  # not swallowed as rich markup
    assert "397,642" in text and "51,358" in text and "*>" in text
    assert "400,000 bytes - margin 1,000 = 399,000" in text


def test_fit_table_labels_predicted_and_measured_model_bytes_apart():
    lines = _text(T.fit_table(FIT_SUMMARY)).splitlines()
    header = "\n".join(lines[:6])
    assert "model bytes predicted" in header and "model bytes measured (file)" in header
    assert "from the measured file where there is one" in "\n".join(lines[-3:])
    chosen = next(line for line in lines if "*>" in line)
    assert "349,871" in chosen and "350,000" in chosen  # the choice's prediction beside its file size
    uniform = next(line for line in lines if "e6 q6" in line)
    assert "300,000" in uniform and " - " in uniform  # never written: no measured size


@pytest.fixture
def frame():
    return pd.DataFrame({"reg.weight_decay": ["0", "0.04", None], "seed": [1, 2, 3],
                         "val_bpb_roundtrip": [1.5, math.nan, 1.2345678901234567],
                         "total_bytes": [100, 200, 300], "ok": [True, False, True]})


def test_csv_round_trip_keeps_key_strings_and_nan(frame, tmp_path):
    T.write_csv(frame, tmp_path / "r.csv")
    back = T.read_frame(tmp_path / "r.csv", text_columns=["reg.weight_decay"])
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["reg.weight_decay"].tolist()[:2] == ["0", "0.04"]  # "0" stays "0", not 0 or 0.0
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]  # no temp file left behind


def test_parquet_round_trip(frame, tmp_path):
    T.write_parquet(frame, tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(T.read_frame(tmp_path / "r.parquet"), frame)


def test_json_is_records_with_null_for_nan_and_full_precision(frame, tmp_path):
    T.write_json(frame, tmp_path / "r.json")
    records = json.loads((tmp_path / "r.json").read_text())
    assert records == T.records(frame)
    assert records[1]["val_bpb_roundtrip"] is None and records[2]["reg.weight_decay"] is None
    assert records[2]["val_bpb_roundtrip"] == 1.2345678901234567
    assert type(records[0]["seed"]) is int and records[0]["ok"] is True
    back = pd.DataFrame(json.loads(T.json_text(frame)))
    assert back["seed"].tolist() == [1, 2, 3] and back["val_bpb_roundtrip"].isna().tolist() == [False, True, False]


def test_records_turn_pandas_na_into_none():
    frame = pd.DataFrame({"total_bytes": pd.array([1, None], dtype="Int64")})
    assert T.records(frame) == [{"total_bytes": 1}, {"total_bytes": None}]


CELLS = pd.DataFrame({
    "reg.weight_decay": ["0", "0.04", "0.09"], "point": ["train"] * 3,
    "bpb_mean": [1.30, 1.25, math.nan], "bpb_std": [0.01, math.nan, math.nan],
    "total_bytes": pd.array([15_000_000, 15_500_000, None], dtype="Int64"),
    "frontier": [True, True, False],
})


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plots" / "frontier.png"
    T.plot_frontier(CELLS, path, 16_000_000, keys=["reg.weight_decay"], title="t")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["frontier.png"]


def test_plot_without_matplotlib_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    with pytest.raises(MissingExtraError) as info:
        T.plot_frontier(CELLS, tmp_path / "f.png", 16_000_000)
    message = str(info.value)
    assert "pip install 'pgolf[plot]'" in message and "\n" not in message
    assert not (tmp_path / "f.png").exists()
