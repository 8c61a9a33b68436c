from pgolf.audit.logs import parse_log

from .conftest import train_log


def test_the_scored_line_is_the_last_that_prints_val_loss_and_val_bpb(tmp_path):
    log = tmp_path / "train_seed7.log"
    log.write_text(train_log(1.22436570, loss=2.07269931, artifact=15_815_847, total=15_863_489) +
                   "round trip: val_bpb 1.3\n")
    facts = parse_log(log)
    assert (facts.val_bpb.value, facts.val_loss.value, facts.bpb_decimals) == (1.2243657, 2.07269931, 8)
    assert facts.val_bpb.lineno == 7 and facts.val_bpb.text.startswith("final_int8_zlib_roundtrip_exact")
    assert (facts.artifact_bytes.value, facts.total_bytes.value, facts.seed) == (15_815_847, 15_863_489, "7")
    assert (facts.train_s.value, facts.eval_s.value) == (590.0, 1.5)


def test_other_formats_phased_ttt_minutes_and_pgolf(tmp_path):
    log = tmp_path / "train0.txt"
    log.write_text("4500/20000 train_loss: 2.27 train_time: 9.0m tok/s: 6589668\n"
                   "stopping_early: wallclock_cap train_time: 599592ms step: 4945/20000\n"
                   "GPTQ:collected 67 Hessians in 4.7s\n"
                   "diagnostic post-ema val_loss:2.33 val_bpb:1.06 eval_time:6718ms\n"
                   "1776144156.999 quantized_ttt_phased val_loss:2.31944212 val_bpb:1.05989454 eval_time:508785ms\n"
                   "total_eval_time:508.8s\n")
    facts = parse_log(log)
    assert (facts.val_bpb.value, facts.val_loss.value, facts.val_bpb.lineno) == (1.05989454, 2.31944212, 5)
    assert facts.train_s.value == 599.592 and [c.value for c in facts.calibration] == [4.7]
    assert facts.eval_s.value == 508.8
    pgolf = tmp_path / "train_seed1337.log"
    pgolf.write_text("trained 30 steps (completed): train_time 2.6s\nfloat model: val_loss 6.9234 val_bpb 3.8538\n"
                     "round trip: val_loss 6.92391234 val_bpb 3.85391234, 331,654 bytes total\n"
                     "pgolf pack: seed 1337 ships artifacts/fit-420000.pgolf, recorded (cpu float32)\n"
                     "Serialized model artifacts/fit-420000.pgolf: 289653 bytes\nCode size train_gpt.py: 42001 bytes\n"
                     "Total submission size: 331654 bytes\nshipped val_loss:6.92391234 val_bpb:3.85391234\n")
    facts = parse_log(pgolf)
    assert (facts.val_bpb.value, facts.val_loss.value, facts.val_bpb.lineno) == (3.85391234, 6.92391234, 8)
    assert (facts.artifact_bytes.value, facts.code_bytes.value, facts.total_bytes.value) == (289653, 42001, 331654)
    assert (facts.train_s.value, facts.eval_s) == (2.6, None)
