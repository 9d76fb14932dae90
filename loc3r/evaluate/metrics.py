"""Evaluation metrics, equal to the official evaluators' per sample and in aggregate (their quirks included, each
commented with the official file and lines it follows; tests/test_official_metrics.py checks them against the
official code's own outputs on stress cases, tests/fixtures/official_metrics).

- Localization (SQA3D's utils/localization_metric.py): a position is correct when its x-y distance to the truth
  is < 0.5 m / 1.0 m; an orientation when the yaw error min(|d|, 360 - |d|) is < 15 / 30 degrees. Reported in
  percent, with the median errors.
- SQA3D answers (protocol "leo"): LEO's clean_answer on both sides, EM@1 = the first reference, refined EM also
  containment either way (LLaVA-3D's sqa3d_evaluator.py); per question type by the question's first word (LEO's).
- ScanQA ("vlm3r", "video3dllm"), MSQA ("msr3d"), VSI-Bench ("thinking_in_space", "lmms_eval_latest"): below.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from loc3r import geometry
from loc3r.data.benchmarks import VSI_MULTIPLE_CHOICE, VSI_NUMERIC

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

_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
QUESTION_TYPES = ("what", "is", "how", "can", "which", "others")


def leo_clean_answer(text: str) -> str:
    """LEO's answer normalisation as MSR3D's evaluator/utils.py clean_answer (l.11-68) runs it, step for step:
    lower case; ASCII spaces stripped and collapsed (not tabs or newlines: the character class is '[ ]'); '.' and
    two or more spaces -> '. '; every character but ASCII letters, digits, ',', "'", whitespace, '-' and ':'
    removed (so the later 'ç' -> 'c' and '’' -> "'" never apply); typo fixes, 'tv' -> 'TV', numbers 0-20 and 23 spelled
    out and 'none' -> 'zero', each at word boundaries (also inside "2-3" or "let's"); a digit glued to a word dropped
    ("mat2" -> "mat"); 'a', 'an', 'the' dropped before a word of letters (after 'tv' became 'TV': "the tv" -> "TV");
    'backwards' -> 'backward'. Nothing is stripped at the end."""
    s = text.lower()
    for pattern, replacement in _LEO_STEPS:
        s = re.sub(pattern, replacement, s)
    return s


_LEO_STEPS = [(r"[ ]+$", ""), (r"^[ ]+", ""), (r" {2,}", " "), (r"\.[ ]{2,}", ". "),
              (r"[^a-zA-Z0-9,'\s\-:]+", ""), ("ç", "c"), ("’", "'"),
              *[(rf"\b{wrong}\b", right) for wrong, right in
                (("letf", "left"), ("let", "left"), ("tehre", "there"), ("rigth", "right"), ("rght", "right"),
                 ("behine", "behind"), ("tv", "TV"), ("chai", "chair"), ("wasing", "washing"),
                 ("waslked", "walked"), ("oclock", "o'clock"))],
              (r"\bo'[ ]+clock\b", "o'clock"),
              (r"\b0\b", "zero"), (r"\bnone\b", "zero"), *[(rf"\b{i}\b", _NUMBERS[i]) for i in range(1, 21)],
              (r"\b23\b", "twenty-three"),
              (r"\b([a-zA-Z]+)([0-9])\b", r"\g<1>"), *[(rf"\b{article}\b ([a-zA-Z]+)", r"\g<1>")
                                                         for article in ("a", "an", "the")],
              (r"\bbackwards\b", "backward")]


def leo_em(prediction: str, references: list[str]) -> tuple[int, int]:
    """(EM, refined EM) of cleaned texts as LEO's ScanQA answer_match (VLM-3R scanqa_evaluator.py l.86-93): EM when
    the prediction is one of the references; refined also when either contains the other once their whitespace is
    removed ('' is contained in every string)."""
    if prediction in references:
        return 1, 1
    squeeze = "".join(prediction.split())
    return 0, int(any(squeeze in "".join(r.split()) or "".join(r.split()) in squeeze for r in references))


def question_type(question: str) -> str:
    """SQA3D question type as LEO's get_sqa_question_type (data/data_utils.py l.236-249): the first of what / is /
    how / can / which that the left-stripped, lower-cased question starts with ("What's" is what, "Island" is is),
    else others."""
    start = question.lstrip().lower()
    return next((t for t in QUESTION_TYPES[:-1] if start.startswith(t)), "others")


def qa_metrics(predictions: list[str], references: list[list[str]], questions: list[str],
               types: list[str] | None = None) -> dict:
    """EM@1 and refined EM (percent): overall, per SQA3D question type (the question's first word) in `by_type`,
    and, when `types` is given (one per question, e.g. our synthetic rooms' question families), per those types
    in `by_question_type`. Each answer is matched once."""
    # (em, refined em) per question against the first reference, as LLaVA-3D's llava/eval/sqa3d_evaluator.py (LEO's
    # SQA3DEvaluator and Video-3D-LLM's eval_sqa3d.py give the same on SQA3D's one answer per question)
    scores = [leo_em(leo_clean_answer(pred), [leo_clean_answer(refs[0])] if refs else [])
              for pred, refs in zip(predictions, references)]
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


# --------------------------------------------------------------------------------------------------------
# ScanQA
# --------------------------------------------------------------------------------------------------------

# "vlm3r": VITA-Group/VLM-3R llava/eval/scanqa_evaluator.py (LLaVA-3D's is the same): LEO's clean_answer on both sides,
# EM / refined EM against every reference (LEO's evaluator/scanqa_eval.py answer_match), pycocoevalcap's PTB tokenizer,
# then BLEU-1..4, METEOR, ROUGE-L, CIDEr. "video3dllm": LaVi-Lab/Video-3D-LLM llava/eval/eval_scanqa.py: the raw
# prediction (EM: exactly one of the references), its trailing '.' stripped for the scorers, no tokenizer.
# "leo": LEO's own ScanQAEvaluator (embodied-generalist evaluator/scanqa_eval.py): its answer_match walks the
# references in order and the first that matches either way decides (an earlier reference containing the answer makes
# it refined only), and its scorers see the cleaned texts untokenized.
SCANQA_PROTOCOLS = ("vlm3r", "video3dllm", "leo")


def java_available() -> bool:
    """pycocoevalcap's PTB tokenizer and METEOR run a Java program."""
    import shutil

    return shutil.which("java") is not None


def leo_first_match(prediction: str, references: list[str]) -> tuple[int, int]:
    """(EM, refined EM) as LEO's ScanQAEvaluator.answer_match (scanqa_eval.py l.41-50): the first reference that
    equals the prediction, contains it or is contained in it (whitespace removed) decides."""
    squeeze = "".join(prediction.split())
    for r in references:
        if prediction == r:
            return 1, 1
        if squeeze in "".join(r.split()) or "".join(r.split()) in squeeze:
            return 0, 1
    return 0, 0


def scanqa_texts(predictions: list[str], references: list[list[str]], protocol: str):
    """Per question (em, refined em or None) and the texts the scorers see: {i: [prediction]}, {i: references}."""
    scores, res, gts = [], {}, {}
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if protocol in ("vlm3r", "leo"):  # LEO's clean_answer on both sides
            pred = leo_clean_answer(pred)
            refs = [leo_clean_answer(r) for r in refs]
        if protocol == "vlm3r":
            scores.append(leo_em(pred, refs))
            res[i] = [pred]  # the prediction as cleaned (l.112), the references also newline-free and stripped (l.113)
            gts[i] = [r.replace("\n", " ").strip() for r in refs]
        elif protocol == "leo":
            scores.append(leo_first_match(pred, refs))
            res[i], gts[i] = [pred], refs  # scanqa_eval.py l.62-63
        else:
            scores.append((int(pred in refs), None))  # the raw answer (l.37), no refined EM
            res[i], gts[i] = [pred.rstrip(".")], list(refs)  # l.34-35
    return scores, res, gts


def scanqa_metrics(predictions: list[str], references: list[list[str]], protocol: str = "vlm3r") -> dict:
    """ScanQA's answer metrics (percent) as the official evaluator of `protocol` computes them: EM@1 (and refined EM
    under vlm3r), BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap's scorers, on empty strings too, as the official
    pipelines run them). The PTB tokenizer (vlm3r) and METEOR need Java: without it METEOR is None, vlm3r's texts go
    to the scorers untokenized (not the official numbers), and "java" is False."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if protocol not in SCANQA_PROTOCOLS:
        raise ValueError(f"unknown ScanQA protocol {protocol!r}: expected one of {', '.join(SCANQA_PROTOCOLS)}")
    scores, res, gts = scanqa_texts(predictions, references, protocol)
    if protocol == "video3dllm":  # its METEOR fails on a line break (meteor.py l.44; pycocoevalcap's then hangs)
        broken = next((i for i in res if any("\n" in t or "\r" in t for t in res[i] + gts[i])), None)
        if broken is not None:
            raise ValueError(f"answer {broken} holds a line break, which Video-3D-LLM's METEOR cannot score")
    java = java_available()
    if protocol == "vlm3r" and java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        res = tokenizer.tokenize({i: [{"caption": c} for c in v] for i, v in res.items()})
        gts = tokenizer.tokenize({i: [{"caption": c} for c in v] for i, v in gts.items()})
    n = max(len(scores), 1)
    out = {"em1": 100.0 * sum(em for em, _ in scores) / n}
    if protocol != "video3dllm":
        out["em_refined"] = 100.0 * sum(r for _, r in scores) / n
    if scores:
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out.update({f"bleu{k + 1}": 100.0 * float(bleu[k]) for k in range(4)})
        out["rouge_l"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
        out["cider"] = 100.0 * float(Cider().compute_score(gts, res)[0])
        out["meteor"] = None
        if java:
            from pycocoevalcap.meteor.meteor import Meteor

            if protocol == "leo":  # LEO's copy of the METEOR wrapper collapses the whitespace of each line it sends
                gts = {i: [re.sub(r"\s+", " ", c) for c in v] for i, v in gts.items()}  # (meteor.py l.58)
                res = {i: [re.sub(r"\s+", " ", c) for c in v] for i, v in res.items()}
            out["meteor"] = 100.0 * float(Meteor().compute_score(gts, res)[0])
    out.update(protocol=protocol, java=java, n=len(scores))
    return out


# --------------------------------------------------------------------------------------------------------
# MSQA (MSR3D)
# --------------------------------------------------------------------------------------------------------

# MSR3D's evaluator/evaluate_msqa.py: the base question types (matched as substrings of a sample's type, e.g.
# "attribute-color"), merged into six reported groups; the overall score is the count-weighted mean of the groups.
MSQA_BASE_TYPES = ("counting", "existence", "attribute", "spatial relationship", "navigation", "refer", "affordance",
                   "description", "room type")
MSQA_GROUPS = {"counting": ("counting",), "existence": ("existence",),
               "attribute_description": ("attribute", "description"),
               "spatial_refer": ("spatial relationship", "refer"), "navigation": ("navigation",),
               "others": ("affordance", "room type")}


def msqa_sample(prediction: str, answers: list[str]) -> tuple[int, int]:
    """(strict EM, EM-R) of one MSQA answer as MSQAEvaluator.eval_metrics scores it: against the first reference
    only (evaluate_msqa.py l.84); EM-R = answer_match of the cleaned texts, strict EM = equality after cleaning the
    cleaned texts once more (utils.py l.100-110, so "the the chair" equals "chair"). MSR3D's answer_match (l.80-89) is
    LEO's refined match."""
    pred, ref = leo_clean_answer(prediction), leo_clean_answer(answers[0])
    return int(leo_clean_answer(pred) == leo_clean_answer(ref)), leo_em(pred, [ref])[1]


def msqa_groups(question_type: str) -> list[str]:
    """The reported groups an MSQA question type counts in: once for every base type that is a substring of the
    lower-cased type (evaluate_msqa.py l.130-135), so "attribute description" counts twice in attribute_description
    and "counting-existence" in both counting and existence; [] for a type that names none (not scored)."""
    t = question_type.lower()
    return [g for base in MSQA_BASE_TYPES if base in t for g, members in MSQA_GROUPS.items() if base in members]


def judge_score(reply: str) -> int | None:
    """The GPT-score judge's reply read as MSR3D does (evaluate_msqa.py l.13-16): its first run of digits as an
    integer, unclamped ("10" -> 10, "5/5" -> 5, "3.5" -> 3); None without a digit (the official code then fails)."""
    m = re.search(r"\d+", reply)
    return int(m.group(0)) if m else None


def msqa_metrics(predictions: list[str], references: list[list[str]], types: list[str],
                 questions: list[str] | None = None, judge=None) -> dict:
    """MSQA's metrics as MSR3D's MSQAEvaluator.eval_metrics computes them (percent): EM-R and strict EM per group,
    a sample counted in every group its type names (msqa_groups), each group the mean over its entries, overall the
    count-weighted mean over the groups (l.194). With `judge` (question, prediction, reference) -> the judge's
    reply, the GPT-score (score - 1) * 25, unclamped (l.90); a reply without a number is left out of it and counted
    (`gpt_unparsed`; the official code fails there). Groups without questions are left out (the official code raises
    KeyError for them)."""
    rows = defaultdict(list)  # group -> [(strict, refined, gpt)]
    unscored = unparsed = 0
    for i, (pred, refs, kind) in enumerate(zip(predictions, references, types)):
        groups = msqa_groups(kind)
        if not groups:  # a type no group names: not scored, and counted so that a report says so
            unscored += 1
            continue
        strict, refined = msqa_sample(pred, refs or [""])
        gpt = None
        if judge is not None:
            score = judge_score(judge(questions[i] if questions else "", pred, (refs or [""])[0]))
            unparsed += score is None
            gpt = None if score is None else (score - 1) * 25.0
        for group in groups:
            rows[group].append((strict, refined, gpt))
    out = {}
    for group in MSQA_GROUPS:
        v = rows.get(group, [])
        if not v:
            continue
        out[f"EM-R_{group}"] = 100.0 * sum(r for _, r, _ in v) / len(v)
        out[f"EM_{group}"] = 100.0 * sum(s for s, _, _ in v) / len(v)
        gpts = [g for _, _, g in v if g is not None]
        if judge is not None and gpts:
            out[f"GPT-Score_{group}"] = sum(gpts) / len(gpts)
        out[f"n_{group}"] = len(v)
    total = sum(len(v) for v in rows.values())
    if unscored:
        out["n_unscored"] = unscored
    if total:
        out["EM-R_overall"] = 100.0 * sum(r for v in rows.values() for _, r, _ in v) / total
        out["EM_overall"] = 100.0 * sum(s for v in rows.values() for s, _, _ in v) / total
        gpts = [g for v in rows.values() for _, _, g in v if g is not None]
        if judge is not None and gpts:
            out["GPT-Score_overall"] = sum(gpts) / len(gpts)
    if unparsed:
        out["gpt_unparsed"] = unparsed
    out["n"] = total
    out["protocol"] = "msr3d"
    return out


class OpenAIJudge:
    """MSQA's GPT-score judge through an OpenAI-compatible chat endpoint the user gives (off by default). MSR3D
    sends its judge prompt from a file it does not publish, then "Question: ...\\nAnswer: ...\\nGround Truth: ...",
    and reads the first integer of the reply as the score (judge_score); the system prompt below is ours."""

    SYSTEM = ("You grade answers to questions about a 3D scene. Compare the answer with the ground truth and reply "
              "with one integer from 1 (wrong) to 5 (fully correct and complete), nothing else.")

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s

    def __call__(self, question: str, prediction: str, reference: str) -> str:
        import json as json_module
        import urllib.request

        body = {"model": self.model, "temperature": 0, "messages": [
            {"role": "system", "content": self.SYSTEM},
            {"role": "user", "content": f"Question: {question}\nAnswer: {prediction}\nGround Truth: {reference}"}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json_module.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = json_module.loads(response.read())["choices"][0]["message"]["content"]
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise RuntimeError(f"{self.url}: the judge did not answer ({e})") from None
        return reply


# --------------------------------------------------------------------------------------------------------
# VSI-Bench (lmms-eval / thinking-in-space lmms_eval/tasks/vsibench/utils.py)
# --------------------------------------------------------------------------------------------------------



# Per-sample scoring as the official code does it (the file and lines each quirk follows are named):
# "thinking_in_space": vision-x-nyu/thinking-in-space lmms_eval/tasks/vsibench/utils.py (51e089c), behind the
# published VSI-Bench numbers; "lmms_eval_latest": EvolvingLMMs-Lab/lmms-eval's (75571cf), which reads numeric
# answers with extract_number ("about 3 meters" -> 3). Outcomes equal theirs on every case of
# tests/fixtures/official_metrics/vsibench.json.
VSI_PROTOCOLS = ("thinking_in_space", "lmms_eval_latest")
VSI_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # MRA's confidence thresholds 0.50, 0.55, ..., 0.95
_NUMBER_WORDS = {w: i for i, w in enumerate(_NUMBERS)} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
                                                          "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
                                                          "thousand": 1000}


def vsi_first_word(prediction: str) -> str:
    """fuzzy_matching (T l.81-82): the text up to the first ' ' (no strip before the split: " A" reads as ""), then
    trailing '.' and surrounding whitespace removed, in that order ("A.\n" stays "A.")."""
    return prediction.split(" ")[0].rstrip(".").strip()


def _to_float(text) -> float | None:
    """to_float (T l.101-106): float(text), None when it is not a number ("nan" and "inf" are numbers)."""
    try:
        return float(text)
    except (TypeError, ValueError, OverflowError):
        return None


def vsi_extract_number(text: str) -> float | None:
    """lmms-eval's extract_number (l.201-257): the first number of the lower-cased text, whichever comes first of a
    run of digits (an optional '-', optional decimals) and a run of English number words ("three hundred and
    twenty-one": words joined by 'and' or anything but letters; 'hundred' multiplies what came before, 'thousand'
    closes a group); None without either."""
    s = str(text).strip().lower()
    digits = re.search(r"-?\d+(?:\.\d+)?", s)
    words, start = [], None
    for m in re.finditer(r"[a-z]+", s):
        token = m.group(0)
        if start is None and token in _NUMBER_WORDS:
            start = m.start()
            words.append(token)
        elif start is not None and token != "and":
            if token not in _NUMBER_WORDS:
                break
            words.append(token)
    if digits is not None and (start is None or digits.start() < start):
        return float(digits.group(0))
    if start is None:
        return None
    total = current = 0
    for token in words:
        value = _NUMBER_WORDS[token]
        if value == 100:
            current = max(current, 1) * 100
        elif value == 1000:
            total, current = total + max(current, 1) * 1000, 0
        else:
            current += value
    return float(total + current)


def mean_relative_accuracy(value: float | None, target: float | None) -> float:
    """VSI-Bench's MRA (T l.87-94): the share of thresholds c with |value - target| / target <= 1 - c. As the official
    code: divided by the signed target (a negative target scores any number 1.0), a target of 0 raises
    ZeroDivisionError (the data readers refuse such rows), a value or target that is not a number scores 0 (the
    TypeError it raises is caught into WORST_CASE_FOR_METRICS, l.116-119)."""
    if value is None or target is None:
        return 0.0
    return float(np.mean(abs(float(value) - float(target)) / float(target) <= 1 - VSI_THRESHOLDS))


def vsi_sample_score(prediction: str, target: str, kind: str, protocol: str = "thinking_in_space") -> float:
    """One question's score in [0, 1] (vsibench_process_results, T l.108-123 / lmms-eval l.260-284)."""
    if kind in VSI_MULTIPLE_CHOICE:  # exact_match: lower-cased, the target as given (not stripped)
        return float(vsi_first_word(prediction).lower() == str(target).lower())
    if kind in VSI_NUMERIC:
        value = (_to_float(vsi_first_word(prediction)) if protocol == "thinking_in_space"
                 else vsi_extract_number(prediction))
        return mean_relative_accuracy(value, _to_float(target))
    raise ValueError(f"unknown VSI-Bench question_type {kind!r}")


def vsibench_metrics(predictions: list[str], targets: list[str], types: list[str],
                     protocol: str = "thinking_in_space") -> dict:
    """Per task (percent): accuracy of multiple choice, MRA of numeric answers; the relative direction's three
    sub-types averaged into one task; overall = the unweighted mean of the task scores present (T l.125-185,
    lmms-eval _compute_all_subscores). Where the official aggregation raises (a relative-direction sub-type present
    without the others) the sub-types present are averaged. Names as lmms-eval's vsibench task writes them."""
    if protocol not in VSI_PROTOCOLS:
        raise ValueError(f"unknown VSI-Bench protocol {protocol!r}: expected one of {', '.join(VSI_PROTOCOLS)}")
    per_type = defaultdict(list)
    for pred, target, kind in zip(predictions, targets, types):
        per_type[kind].append(vsi_sample_score(pred, target, kind, protocol))
    out = {}
    for kind in VSI_NUMERIC:
        if per_type.get(kind):
            out[f"{kind}_mra"] = 100.0 * float(np.mean(per_type[kind]))
    for kind in ("object_rel_distance", "route_planning", "obj_appearance_order"):
        if per_type.get(kind):
            out[f"{kind}_accuracy"] = 100.0 * float(np.mean(per_type[kind]))
    directions = [per_type[k] for k in VSI_MULTIPLE_CHOICE[:3] if per_type.get(k)]
    if directions:
        out["object_rel_direction_accuracy"] = 100.0 * float(np.mean([np.mean(d) for d in directions]))
    tasks = [v for k, v in out.items()]
    if tasks:
        out["vsibench_overall"] = float(np.mean(tasks))
    out["n"] = sum(len(v) for v in per_type.values())
    out["protocol"] = protocol
    return out


# --------------------------------------------------------------------------------------------------------
# Protocols: the official evaluator each benchmark's answer metrics follow (`loc3r eval --protocol`)
# --------------------------------------------------------------------------------------------------------

PROTOCOLS = {"sqa3d": ("leo",), "scanqa": SCANQA_PROTOCOLS, "msqa": ("msr3d",), "vsibench": VSI_PROTOCOLS}
PROTOCOL_SOURCES = {
    "vlm3r": "VITA-Group/VLM-3R llava/eval/scanqa_evaluator.py (LLaVA-3D's is the same)",
    "video3dllm": "LaVi-Lab/Video-3D-LLM llava/eval/eval_scanqa.py",
    "leo": "LEO's clean_answer and answer_match (embodied-generalist/embodied-generalist evaluator/scanqa_eval.py, "
           "sqa3d_eval.py; for SQA3D as LLaVA-3D's llava/eval/sqa3d_evaluator.py)",
    "msr3d": "MSR3D/MSR3D evaluator/evaluate_msqa.py + evaluator/utils.py",
    "thinking_in_space": "vision-x-nyu/thinking-in-space lmms_eval/tasks/vsibench/utils.py, behind the published "
                         "VSI-Bench numbers",
    "lmms_eval_latest": "EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/vsibench/utils.py with extract_number",
}

# the per-question answer score `answer_scores` gives, as reports name it
ANSWER_SCORE_NAMES = {"sqa3d": "EM@1", "scanqa": "EM@1", "msqa": "EM", "vsibench": "accuracy / MRA"}


def answer_scores(benchmark: str, protocol: str, predictions: list[str], references: list[list[str]],
                  types: list[str]) -> list[float]:
    """Each question's score in [0, 1] under the benchmark's headline answer metric, as its aggregate counts it:
    SQA3D EM@1 (qa_metrics), ScanQA EM@1 (scanqa_texts, per protocol), MSQA strict EM (msqa_sample), VSI-Bench
    accuracy or mean relative accuracy (vsi_sample_score)."""
    if benchmark == "sqa3d":
        return [float(leo_em(leo_clean_answer(p), [leo_clean_answer(r[0])] if r else [])[0])
                for p, r in zip(predictions, references)]
    if benchmark == "scanqa":
        return [float(em) for em, _ in scanqa_texts(predictions, references, protocol)[0]]
    if benchmark == "msqa":
        return [float(msqa_sample(p, r or [""])[0]) for p, r in zip(predictions, references)]
    if benchmark == "vsibench":
        return [vsi_sample_score(p, (r or [""])[0], t, protocol) for p, r, t in zip(predictions, references, types)]
    raise ValueError(f"unknown benchmark {benchmark!r}")
