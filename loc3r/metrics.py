"""Evaluation metrics, following the official definitions.

- Localization (SQA3D's utils/localization_metric.py): a position is correct when its x-y distance to the truth
  is < 0.5 m / 1.0 m; an orientation when the yaw error min(|d|, 360 - |d|) is < 15 / 30 degrees. Reported in
  percent, with the median errors.
- Situated QA (SQA3D as evaluated by LEO and its successors): answers are normalised (lower case, punctuation
  dropped, common typos fixed, numbers 0-20 spelled out, leading articles removed); EM@1 is an exact match of the
  normalised top answer; refined EM also accepts a prediction that contains, or is contained in, a reference
  (spaces ignored). Per question type by the question's first word (what / is / how / can / which / others).
- Open-ended QA (ScanQA style): CIDEr, BLEU-4, ROUGE-L from pycocoevalcap on whitespace-tokenised normalised text
  (its PTB tokenizer and METEOR need Java, which a CPU training box rarely has).
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from loc3r import geometry

# --------------------------------------------------------------------------------------------------------
# Localization
# --------------------------------------------------------------------------------------------------------


def yaw_error_deg(pred_yaw_rad, gt_yaw_rad):
    """Absolute yaw error in degrees, in [0, 180]: min(|d|, 360 - |d|)."""
    return np.abs(np.degrees(geometry.angle_diff(pred_yaw_rad, gt_yaw_rad)))


def localization_metrics(pred_xy, gt_xy, pred_yaw_rad, gt_yaw_rad) -> dict[str, float]:
    """Acc@0.5m, Acc@1.0m, Acc@15deg, Acc@30deg (percent) and median errors, for N predictions."""
    pred_xy, gt_xy = np.asarray(pred_xy, np.float64).reshape(-1, 2), np.asarray(gt_xy, np.float64).reshape(-1, 2)
    if len(gt_xy) == 0:
        return {}
    pos_err = np.linalg.norm(pred_xy - gt_xy, axis=-1)
    yaw_err = yaw_error_deg(pred_yaw_rad, gt_yaw_rad)
    return {
        "acc_0.5m": 100.0 * float(np.mean(pos_err < 0.5)),
        "acc_1.0m": 100.0 * float(np.mean(pos_err < 1.0)),
        "acc_15deg": 100.0 * float(np.mean(yaw_err < 15)),
        "acc_30deg": 100.0 * float(np.mean(yaw_err < 30)),
        "median_pos_err_m": float(np.median(pos_err)),
        "median_yaw_err_deg": float(np.median(yaw_err)),
    }


# --------------------------------------------------------------------------------------------------------
# Situated QA
# --------------------------------------------------------------------------------------------------------

_TYPOS = {"letf": "left", "let": "left", "tehre": "there", "rigth": "right", "rght": "right", "behine": "behind",
          "chai": "chair", "wasing": "washing", "waslked": "walked", "oclock": "o'clock", "backwards": "backward"}
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
_WORD_SUBS = {**_TYPOS, **{str(i): w for i, w in enumerate(_NUMBERS)}, "none": "zero", "23": "twenty-three"}
QUESTION_TYPES = ("what", "is", "how", "can", "which", "others")


def clean_answer(text: str) -> str:
    """SQA3D answer normalisation used for EM@1 and refined EM."""
    s = " ".join(text.lower().replace("’", "'").replace("ç", "c").split())
    s = re.sub(r"[^a-z0-9,'\s\-:]+", "", s)
    s = re.sub(r"\bo'\s+clock\b", "o'clock", s)
    s = re.sub(r"\b[a-z0-9'\-]+\b", lambda m: _WORD_SUBS.get(m.group(0), m.group(0)), s)
    s = re.sub(r"\b([a-z]+)[0-9]\b", r"\1", s)  # "mat2" -> "mat"
    s = re.sub(r"\b(a|an|the)\b ([a-z]+)", r"\2", s)
    return s.strip()


def answer_match(pred: str, refs: list[str]) -> tuple[int, int]:
    """(exact match, refined match) of a cleaned prediction against cleaned references."""
    if pred in refs:
        return 1, 1
    squeeze = "".join(pred.split())
    for ref in refs:
        r = "".join(ref.split())
        if squeeze and r and (squeeze in r or r in squeeze):
            return 0, 1
    return 0, 0


def question_type(question: str) -> str:
    """SQA3D question type from the question's first word."""
    first = question.strip().lower().split(" ", 1)[0] if question.strip() else ""
    return first if first in QUESTION_TYPES[:-1] else "others"


def qa_metrics(predictions: list[str], references: list[list[str]], questions: list[str],
               types: list[str] | None = None) -> dict:
    """EM@1 and refined EM (percent): overall, per SQA3D question type (the question's first word) in `by_type`,
    and, when `types` is given (one per question, e.g. our synthetic rooms' question families), per those types
    in `by_question_type`. Each answer is matched once."""
    scores = [answer_match(clean_answer(pred), [clean_answer(r) for r in refs])
              for pred, refs in zip(predictions, references)]  # (em, refined em) per question
    n = max(len(scores), 1)
    out = {"em1": 100.0 * sum(em for em, _ in scores) / n, "em_refined": 100.0 * sum(emr for _, emr in scores) / n,
           "by_type": _grouped(scores, [question_type(q) for q in questions])}
    if types is not None:
        out["by_question_type"] = _grouped(scores, types)
    return out


def _grouped(scores: list[tuple[int, int]], kinds: list[str]) -> dict:
    """{kind: {em1, em_refined, n}} of (em, refined em) scores grouped by kind."""
    groups = defaultdict(list)
    for score, kind in zip(scores, kinds):
        groups[kind].append(score)
    return {k: {"em1": 100.0 * sum(em for em, _ in v) / len(v), "em_refined": 100.0 * sum(emr for _, emr in v) / len(v),
                "n": len(v)} for k, v in sorted(groups.items())}


def caption_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """CIDEr, BLEU-4 and ROUGE-L (x100) of open-ended answers, with pycocoevalcap's scorers."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    res = {i: [clean_answer(p) or "none"] for i, p in enumerate(predictions)}
    gts = {i: [clean_answer(r) or "none" for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {"cider": 100.0 * float(cider), "bleu4": 100.0 * float(bleu[3]), "rouge_l": 100.0 * float(rouge)}
