"""Metrics against the official evaluators' own outputs, case for case (tests/fixtures/official_metrics/*.json: the
official functions run on stress cases; each fixture names the repository, path and commit it came from)."""

import json
import math
from pathlib import Path

import pytest

from loc3r.evaluate import metrics as m

FIXTURES = Path(__file__).parent / "fixtures" / "official_metrics"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


VSI = fixture("vsibench")


@pytest.mark.parametrize("protocol", ["thinking_in_space", "lmms_eval_latest"])
def test_vsibench_per_sample_equals_the_official_code(protocol):
    cases, official = VSI["cases"], VSI["protocols"][protocol]["per_sample"]
    agree = 0
    for case, want in zip(cases, official):
        args = (case["prediction"], case["ground_truth"], case["question_type"], protocol)
        score = want["score"]
        if isinstance(score, str) and score.startswith("raises: "):
            with pytest.raises(Exception) as e:
                m.vsi_sample_score(*args)
            assert type(e.value).__name__ == score.split(": ")[1], case
        else:
            got = m.vsi_sample_score(*args)
            assert math.isclose(got, float(score), abs_tol=1e-12), (case, got, score)
        agree += 1
    assert agree == len(cases) >= 500


@pytest.mark.parametrize("protocol", ["thinking_in_space", "lmms_eval_latest"])
def test_vsibench_aggregates_equal_the_official_code(protocol):
    cases = VSI["cases"]
    aggregate = VSI["protocols"][protocol]["aggregate"]
    chosen = [cases[i] for i in aggregate["well_formed_case_indices"]]
    ours = m.vsibench_metrics([c["prediction"] for c in chosen], [c["ground_truth"] for c in chosen],
                              [c["question_type"] for c in chosen], protocol)
    if protocol == "thinking_in_space":  # percent, keys "<task>_MRA:.5:.95:.05" / "<task>_accuracy", "overall"
        official = {k.replace("_MRA:.5:.95:.05", "_mra").replace("overall", "vsibench_overall"): v
                    for k, v in aggregate["well_formed"].items() if not k.startswith("tabulated")}
    else:  # fractions, unrounded
        official = {k.replace("_MRA:.5:.95:.05", "_mra").replace("overall", "vsibench_overall"): 100 * v
                    for k, v in aggregate["well_formed"]["subscores_unrounded"].items()}
    assert set(official) == set(ours) - {"n", "protocol"}
    for key, value in official.items():
        assert math.isclose(ours[key], value, rel_tol=1e-12, abs_tol=1e-9), (key, ours[key], value)
    assert ours["protocol"] == protocol


MSQA = fixture("msqa")


def test_msqa_per_sample_equals_the_official_code():
    official = MSQA["protocols"]["msr3d"]["per_sample"]
    scored = 0
    for case, want in zip(MSQA["cases"], official):
        if not case["answers"]:  # the official code raises IndexError (response_gt[0]); the reader refuses these
            continue
        assert m.leo_clean_answer(case["prediction"]) == want["clean_pred"], case
        assert m.leo_clean_answer(m.leo_clean_answer(case["prediction"])) == want["clean2_pred"], case
        assert m.msqa_sample(case["prediction"], case["answers"]) == (want["em1_strict"], want["em1"]), case
        assert m.msqa_groups(case["type"]) == want["groups"], case
        assert m.judge_score(case["judge_reply"]) == want["judge_parsed"], case
        scored += 1
    assert scored >= 380
    for reply in MSQA["judge_replies"]:
        assert m.judge_score(reply["reply"]) == reply["parsed"], reply


def test_msqa_aggregates_equal_the_official_code():
    excluded = MSQA["protocols"]["msr3d"]["aggregate"]["excluded_cases"]
    cases = [c for i, c in enumerate(MSQA["cases"]) if i not in excluded]
    replies = {c["question"]: c["judge_reply"] for c in cases}  # the judge of each question, as the fixture ran it
    ours = m.msqa_metrics([c["prediction"] for c in cases], [c["answers"] for c in cases], [c["type"] for c in cases],
                          [c["question"] for c in cases], judge=lambda q, p, r: replies[q])
    official = MSQA["protocols"]["msr3d"]["aggregate"]["all"]["result"]
    for key, value in official.items():  # EM-R as fractions there, percent here; the GPT-score as it is
        want = 100 * value if key.startswith("EM-R") else value
        assert math.isclose(ours[key], want, rel_tol=1e-12, abs_tol=1e-9), (key, ours[key], want)
    strict = MSQA["protocols"]["msr3d"]["aggregate"]["all"]["merged"]["em1_strict"]
    for group in m.MSQA_GROUPS:
        assert math.isclose(ours[f"EM_{group}"], 100 * strict[group], rel_tol=1e-12), group
    assert math.isclose(ours["EM_overall"], 100 * strict["weighted_avg_score"], rel_tol=1e-12)


SCANQA = fixture("scanqa")


@pytest.mark.parametrize("protocol", ["vlm3r", "video3dllm", "leo"])
def test_scanqa_exact_match_and_scored_texts_equal_the_official_code(protocol):
    cases, official = SCANQA["cases"], SCANQA["protocols"][protocol]["per_sample"]
    scores, res, gts = m.scanqa_texts([c["prediction"] for c in cases], [c["answers"] for c in cases], protocol)
    for i, (case, want) in enumerate(zip(cases, official)):
        assert scores[i][0] == want["em"], case
        if protocol == "vlm3r":  # (the texts it scores are compared after the PTB tokenizer, in the aggregates)
            assert scores[i][1] == want["em_refined"], case
            if "pred_cleaned" not in want:  # a case that breaks its PTB tokenizer's line alignment (scorer_failure)
                continue
            assert res[i] == [want["pred_cleaned"]], case
            assert gts[i] == [c.replace("\n", " ").strip() for c in want["refs_cleaned"]], case
        elif protocol == "leo":
            assert scores[i][1] == want["em_refined"], case
            if "pred_cleaned" in want:
                assert res[i] == [want["pred_cleaned"]] and gts[i] == want["refs_cleaned"], case
        elif "pred_scored" in want:  # the cases its METEOR crashes on have none
            assert res[i] == [want["pred_scored"]] and gts[i] == want["refs_scored"], case
    assert len(cases) >= 300


def test_sqa3d_exact_match_equals_the_official_code():
    cases, official = SCANQA["cases"], SCANQA["protocols"]["sqa3d_em"]["per_sample"]
    for case, want in zip(cases, official):
        if want["em"] is None:  # no reference: the official code raises IndexError (the SQA3D reader refuses it)
            continue
        out = m.qa_metrics([case["prediction"]], [case["answers"]], ["what?"])
        assert (out["em1"], out["em_refined"]) == (100.0 * want["em"], 100.0 * want["em_refined"]), case


@pytest.mark.skipif(not m.java_available(), reason="the PTB tokenizer and METEOR need Java (.ci/run installs it)")
@pytest.mark.parametrize("protocol", ["vlm3r", "video3dllm", "leo"])
def test_scanqa_aggregates_equal_the_official_code(protocol):
    """Every metric over the corpus the official pipeline scores (its cases that do not crash its METEOR), METEOR to
    1e-6 as it runs in Java."""
    official = SCANQA["protocols"][protocol]
    chosen = [SCANQA["cases"][i] for i in official["ngram_corpus"]]
    ours = m.scanqa_metrics([c["prediction"] for c in chosen], [c["answers"] for c in chosen], protocol)
    a = official["aggregate"]
    if protocol == "vlm3r":  # fractions there, percent here
        want = {"em1": a["[scanqa] EM1"], "em_refined": a["[scanqa] EM1_refined"], "meteor": a["[scanqa] METEOR"],
                "rouge_l": a["[scanqa] ROUGE_L"], "cider": a["[scanqa] CIDEr"],
                **{f"bleu{k}": a[f"[scanqa] Bleu_{k}"] for k in range(1, 5)}}
        want = {k: 100 * v for k, v in want.items()}
    elif protocol == "leo":  # fractions, BLEU-4 only
        want = {"em1": a["em"], "em_refined": a["em_refined"], "bleu4": a["bleu"], "meteor": a["meteor"],
                "rouge_l": a["rouge"], "cider": a["cider"]}
        want = {k: 100 * v for k, v in want.items()}
    else:  # percent there, but for EM
        want = {"em1": 100 * a["EM"], "meteor": a["METEOR"], "rouge_l": a["Rouge"], "cider": a["CIDER"],
                **{f"bleu{k}": a[f"BLEU_{k}"] for k in range(1, 5)}}
    for key, value in want.items():
        tolerance = 1e-4 if key == "meteor" else 1e-9  # 1e-6 of a fraction
        assert math.isclose(ours[key], value, abs_tol=tolerance), (key, ours[key], value)


@pytest.mark.parametrize("protocol", ["video3dllm", "leo"])
def test_scanqa_per_sample_ngram_scores_equal_the_official_code(protocol):
    """The per-sample BLEU-1..4, ROUGE-L and CIDEr the scorers give on the texts scanqa_texts prepares (what
    scanqa_metrics averages) equal the official pipeline's own per-sample lists, on its corpus."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    official = SCANQA["protocols"][protocol]
    chosen = official["ngram_corpus"]
    cases = [SCANQA["cases"][i] for i in chosen]
    _, res, gts = m.scanqa_texts([c["prediction"] for c in cases], [c["answers"] for c in cases], protocol)
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[1]
    ours = {"rouge_l": Rouge().compute_score(gts, res)[1], "cider": Cider().compute_score(gts, res)[1],
            **{f"bleu{k + 1}": bleu[k] for k in range(4)}}
    for j, i in enumerate(chosen):
        want = official["per_sample"][i]
        for key, values in ours.items():
            assert math.isclose(float(values[j]), want[key], rel_tol=1e-9, abs_tol=1e-12), (SCANQA["cases"][i], key)


def test_sqa3d_question_types_follow_leo():
    want = {"What's on my left?": "what", "Whats that": "what", " Island or not": "is", "Isn't it": "is",
            "however": "how", "Howmany": "how", "Cannot": "can", "Whichever": "which", "Could I sit?": "others",
            "is\tthe door open": "is"}
    assert {q: m.question_type(q) for q in want} == want


def test_video3dllm_refuses_what_its_meteor_cannot_score():
    with pytest.raises(ValueError, match="line break"):
        m.scanqa_metrics(["chair\n"], [["chair"]], "video3dllm")
