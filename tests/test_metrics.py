"""Metric functions against hand-computed values."""

import numpy as np
import pytest

from loc3r.evaluate import metrics as m


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


@pytest.mark.parametrize("raw,clean", [  # LEO lower-cases, then writes "tv" as "TV"
    ("The Chair.", "chair"), ("  2 ", "two"), ("none", "zero"), ("on the letf", "on left"),
    ("a brown  table", "brown table"), ("mat2", "mat"), ("3 o' clock", "three o'clock"), ("TV!", "TV"),
])
def test_clean_answer(raw, clean):
    assert m.leo_clean_answer(raw) == clean


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


def test_scanqa_metrics_both_protocols_by_hand():
    preds = ["The brown table.", "two", "chair"]
    refs = [["brown table"], ["2 "], ["table", "desk"]]
    leo = m.scanqa_metrics(preds, refs, "vlm3r")  # cleaned: "brown table" == "brown table", "two" == "two"
    assert leo["em1"] == pytest.approx(200 / 3) and leo["em_refined"] == pytest.approx(200 / 3)
    raw = m.scanqa_metrics(preds, refs, "video3dllm")  # the raw answer exactly one of the references: none is
    assert raw["em1"] == 0.0 and "em_refined" not in raw  # Video-3D-LLM reports no refined EM
    assert leo["protocol"] == "vlm3r" and raw["protocol"] == "video3dllm" and leo["n"] == 3
    perfect = m.scanqa_metrics(["brown table", "two chairs"], [["brown table"], ["two chairs"]], "vlm3r")
    assert perfect["bleu1"] == pytest.approx(100.0) and perfect["rouge_l"] == pytest.approx(100.0)
    assert perfect["em1"] == 100.0 and leo["cider"] != raw["cider"]
    if m.java_available():
        assert leo["java"] and perfect["meteor"] > 0
    else:
        assert perfect["meteor"] is None and not leo["java"]


def test_scanqa_metrics_without_java(monkeypatch):
    monkeypatch.setattr(m, "java_available", lambda: False)
    out = m.scanqa_metrics(["brown table"], [["brown table"]], "vlm3r")
    assert out["java"] is False and out["meteor"] is None and out["bleu1"] == pytest.approx(100.0)


def test_msqa_groups_and_count_weighted_overall():
    preds = ["three", "red", "zero", "left", "kitchen", "the red chair"]
    refs = [["3"], ["red"], ["one"], ["on the left"], ["bedroom"], ["red chair"]]
    types = ["counting", "attribute-color", "counting", "spatial relationship", "room type", "description"]
    out = m.msqa_metrics(preds, refs, types)
    assert m.msqa_groups("attribute-color") == ["attribute_description"]
    assert m.msqa_groups("refer-object") == ["spatial_refer"]
    assert m.msqa_groups("attribute description") == ["attribute_description"] * 2  # counted in each base type
    assert out["EM-R_counting"] == 50.0 and out["n_counting"] == 2
    assert out["EM-R_attribute_description"] == 100.0  # "red" == "red", "red chair" == "red chair" after cleaning
    assert out["EM-R_spatial_refer"] == 100.0 and out["EM_spatial_refer"] == 0.0  # "left" inside "on left"
    assert out["EM-R_others"] == 0.0
    assert out["EM-R_overall"] == pytest.approx(100 * 4 / 6)  # count-weighted: 4 of the 6 answers


def test_msqa_gpt_score_through_a_local_judge():
    """The OpenAI-compatible client against a fake judge served locally: it reads the first integer (1-5)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = []

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body["messages"][-1]["content"], self.headers.get("Authorization")))
            reply = "4" if "Answer: three" in body["messages"][-1]["content"] else "Score: 1."
            data = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = m.OpenAIJudge(f"http://127.0.0.1:{server.server_port}/v1", "judge-model", api_key="k")
        out = m.msqa_metrics(["three", "blue"], [["3"], ["red"]], ["counting", "attribute"], ["How many?", "Color?"],
                             judge)
    finally:
        server.shutdown()
    assert out["GPT-Score_counting"] == 75.0 and out["GPT-Score_attribute_description"] == 0.0
    assert out["GPT-Score_overall"] == 37.5
    assert seen[0][0] == "/v1/chat/completions" and seen[0][2] == "Bearer k"
    assert seen[0][1] == "Question: How many?\nAnswer: three\nGround Truth: 3"


def test_vsibench_metrics_by_hand():
    def mra(prediction, protocol="thinking_in_space"):
        return m.vsi_sample_score(prediction, "10", "object_counting", protocol)

    assert mra("10") == 1.0
    assert mra("11.5 meters") == pytest.approx(0.8)  # 0.15 <= 1 - c for c = 0.50 ... 0.85
    # on a boundary the official float arithmetic decides: 1 - 0.8 = 0.19999999999999996 < 0.2, so c = 0.80 fails
    assert mra("12") == pytest.approx(0.6)
    assert mra("9.5.") == 1.0 and mra("about 10") == 0.0 and mra(" 10") == 0.0  # the first ' '-separated word
    assert mra("about 10", "lmms_eval_latest") == 1.0 and mra("ten", "lmms_eval_latest") == 1.0
    preds = ["B.", "a", "C", "D", "3", "two", "A"]
    targets = ["b", "B", "C", "A", "3", "2", "A"]
    types = ["object_rel_direction_easy", "object_rel_direction_easy", "object_rel_direction_medium",
             "object_rel_direction_hard", "object_counting", "object_counting", "route_planning"]
    out = m.vsibench_metrics(preds, targets, types)
    assert out["object_rel_direction_accuracy"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)  # sub-types averaged
    assert out["object_counting_mra"] == 50.0 and out["route_planning_accuracy"] == 100.0
    assert out["vsibench_overall"] == pytest.approx((50.0 + 50.0 + 100.0) / 3)  # unweighted over the tasks
    with pytest.raises(ValueError, match="unknown VSI-Bench question_type"):
        m.vsibench_metrics(["1"], ["1"], ["object_volume"])
