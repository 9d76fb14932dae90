"""Metric functions against hand-computed values."""

import numpy as np
import pytest

from loc3r import metrics as m


def test_localization_by_hand():
    gt_xy = np.zeros((4, 2))
    pred_xy = np.array([[0.3, 0.4], [0.6, 0.8], [0.0, 0.5], [3.0, 4.0]])  # distances 0.5, 1.0, 0.5, 5.0
    gt_yaw = np.radians([179.0, -179.0, 0.0, 90.0])
    pred_yaw = np.radians([-179.0, 170.0, 14.0, 130.0])  # errors 2 (wraps), 11 (wraps), 14, 40 degrees
    out = m.localization_metrics(pred_xy, gt_xy, pred_yaw, gt_yaw)
    # strict "<" as in the official script: 0.5 m is not within 0.5 m
    assert out["acc_0.5m"] == 0.0
    assert out["acc_1.0m"] == 50.0
    assert out["acc_15deg"] == 75.0
    assert out["acc_30deg"] == 75.0
    assert out["median_pos_err_m"] == pytest.approx(0.75)
    assert out["median_yaw_err_deg"] == pytest.approx(12.5)


def test_yaw_error_wraps():
    assert m.yaw_error_deg(np.radians(-170), np.radians(170)) == pytest.approx(20)
    assert m.yaw_error_deg(np.pi, -np.pi) == pytest.approx(0, abs=1e-9)
    assert m.yaw_error_deg(0.0, np.pi) == pytest.approx(180)


@pytest.mark.parametrize("raw,clean", [
    ("The Chair.", "chair"), ("  2 ", "two"), ("none", "zero"), ("on the letf", "on left"),
    ("a brown  table", "brown table"), ("mat2", "mat"), ("3 o' clock", "three o'clock"), ("TV!", "TV"),  # LEO lower-cases, then writes "tv" as "TV"
])
def test_clean_answer(raw, clean):
    assert m.clean_answer(raw) == clean


def test_qa_metrics_by_hand():
    preds = ["Two", "brown table", "left", "yes"]
    refs = [["2"], ["table"], ["right"], ["no"]]
    qs = ["How many chairs?", "What is in front of me?", "Which way should I go?", "Is the door open?"]
    out = m.qa_metrics(preds, refs, qs)
    assert out["em1"] == 25.0  # only "two"
    assert out["em_refined"] == 50.0  # "brown table" contains "table"
    assert out["by_type"]["how"] == {"em1": 100.0, "em_refined": 100.0, "n": 1}
    assert out["by_type"]["what"]["em_refined"] == 100.0 and out["by_type"]["what"]["em1"] == 0.0
    assert m.question_type("Could I sit?") == "others"
    by_family = m.qa_metrics(preds, refs, qs, types=["count", "direction", "navigation", "navigation"])
    assert by_family["by_type"] == out["by_type"] and by_family["em1"] == out["em1"]
    by_family = by_family["by_question_type"]
    assert by_family == {"count": {"em1": 100.0, "em_refined": 100.0, "n": 1},
                         "direction": {"em1": 0.0, "em_refined": 100.0, "n": 1},
                         "navigation": {"em1": 0.0, "em_refined": 0.0, "n": 2}}


def test_caption_metrics_identical_answers_score_high():
    refs = [["brown table"], ["two chairs"], ["the bed"]]
    perfect = m.caption_metrics(["brown table", "two chairs", "bed"], refs)
    wrong = m.caption_metrics(["lamp", "sofa", "window"], refs)
    assert perfect["rouge_l"] == pytest.approx(100.0) and wrong["rouge_l"] == 0.0
    assert perfect["cider"] > wrong["cider"]
