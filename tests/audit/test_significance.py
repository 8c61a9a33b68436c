import pytest
from scipy import stats

from pgolf.audit.logs import parse_log
from pgolf.audit.significance import seed_summary, significance_row

from .conftest import train_log

RATIO = 2.0  # nats per bpb in these logs (val_loss = 2 * val_bpb)


def _summary(tmp_path, name, bpbs):
    logs = []
    for i, bpb in enumerate(bpbs):
        path = tmp_path / f"{name}_seed{i}.log"
        path.write_text(train_log(bpb))
        logs.append(parse_log(path))
    return seed_summary(logs)


def test_a_clear_improvement_passes_with_the_welch_p_scipy_gives(tmp_path):
    ours, theirs = [1.100, 1.101, 1.102], [1.105, 1.106, 1.107]
    row = significance_row(_summary(tmp_path, "a", ours), _summary(tmp_path, "b", theirs), None, "prev")
    expected_p = stats.ttest_ind(ours, theirs, equal_var=False, alternative="less").pvalue
    assert row.verdict == "pass"
    assert f"p={expected_p:.3g}" in row.detail and expected_p < 0.01
    assert f"{0.005 * RATIO:+.5f} nats" in row.detail


def test_a_big_gain_with_a_p_that_misses_fails(tmp_path):
    ours, theirs = [1.100, 1.106, 1.094], [1.105, 1.106, 1.107]
    row = significance_row(_summary(tmp_path, "a", ours), _summary(tmp_path, "b", theirs), None, "prev")
    expected_p = stats.ttest_ind(ours, theirs, equal_var=False, alternative="less").pvalue
    assert row.verdict == "fail" and expected_p > 0.01 and f"p={expected_p:.3g}" in row.detail
    assert f"{0.006 * RATIO:+.5f} nats" in row.detail  # above 0.005 nats: the p-value alone fails it


def test_a_significant_gain_under_half_a_centinat_fails(tmp_path):
    ours, theirs = [1.1000, 1.1001, 1.1002], [1.1020, 1.1021, 1.1022]  # 0.002 bpb = 0.004 nats
    row = significance_row(_summary(tmp_path, "a", ours), _summary(tmp_path, "b", theirs), None, "prev")
    assert row.verdict == "fail" and "+0.00400 nats" in row.detail


def test_against_a_single_number_uses_the_one_sample_t_test(tmp_path):
    ours = [1.100, 1.101, 1.102]
    row = significance_row(_summary(tmp_path, "a", ours), None, 1.110, "val_bpb 1.11")
    expected_p = stats.ttest_1samp(ours, 1.110, alternative="less").pvalue
    assert row.verdict == "pass" and f"p={expected_p:.3g}" in row.detail


def test_the_summary_reports_nats_from_the_logs(tmp_path):
    summary = _summary(tmp_path, "a", [1.1, 1.2, 1.3])
    assert summary["n"] == 3 and summary["bpb_mean"] == pytest.approx(1.2)
    assert summary["nats_mean"] == pytest.approx(2.4) and summary["nats_per_bpb"] == pytest.approx(RATIO)
    assert summary["bpb_std"] == pytest.approx(0.1)
