"""String-matching metrics: DocVQA's ANLS, ChartQA's relaxed accuracy, exact match (GQA) and
OCRBench's substring matching."""

from __future__ import annotations


# ---- ANLS ------------------------------------------------------------------------------------
def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    """DocVQA ANLS for one question (rrc.cvc.uab.es DocVQA evaluation; lmms-eval
    tasks/docvqa/utils.py scores the same): max over answers of 1 - NL if NL < threshold else 0, where
    NL is the Levenshtein distance over the longer length, on lower-cased, whitespace-collapsed
    strings (as the DocVQA evaluation does)."""
    if not answers:
        raise ValueError("anls needs at least one ground-truth answer")
    pred = " ".join(prediction.strip().lower().split())
    best = 0.0
    for ans in answers:
        gt = " ".join(ans.strip().lower().split())
        longest = max(len(pred), len(gt))
        nl = 0.0 if longest == 0 else levenshtein(pred, gt) / longest
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


# ---- ChartQA relaxed accuracy ------------------------------------------------------------------
def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, target: str, tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy (google-research/pix2struct, pix2struct/metrics.py
    ``relaxed_correctness``; lmms-eval tasks/chartqa/utils.py): numbers within ``tolerance`` relative change of the target
    count ("45%" reads as 0.45); a zero or non-numeric target needs an exact case-insensitive
    match (as pix2struct's reference ``relaxed_correctness``)."""
    pred, tgt = prediction.strip(), target.strip()
    pred_f, tgt_f = _to_float(pred), _to_float(tgt)
    if pred_f is not None and tgt_f:
        return float(abs(pred_f - tgt_f) / abs(tgt_f) <= tolerance)
    return float(pred.lower() == tgt.lower())


# ---- exact match, multiple choice, yes/no ------------------------------------------------------
def exact_match(prediction: str, answers: list[str] | str) -> float:
    """Case-insensitive match after collapsing whitespace and trailing punctuation: GQA's
    accuracy (its eval.py compares answer strings; LLaVA's and lmms-eval's gqa tasks lower-case
    and drop the final period first)."""
    answers = [answers] if isinstance(answers, str) else answers

    def norm(s: str) -> str:
        return " ".join(s.strip().lower().split()).strip(".,;:!? ")

    return float(norm(prediction) in {norm(a) for a in answers})


# ---- OCRBench ------------------------------------------------------------------------------------
OCRBENCH_HME = "Handwritten Mathematical Expression Recognition"


def ocrbench_match(prediction: str, answers: list[str], category: str) -> float:
    """OCRBench (Yuliang-Liu/MultimodalOCR, OCRBench/example.py; VLMEvalKit
    vlmeval/dataset/utils/ocrbench.py): 1.0 when some answer is a substring of the prediction.
    Handwritten maths drops every space and newline and keeps the case; the other categories
    lower-case, strip and turn newlines into spaces."""
    for ans in answers:
        if category == OCRBENCH_HME:
            a = ans.strip().replace("\n", " ").replace(" ", "")
            p = prediction.strip().replace("\n", " ").replace(" ", "")
        else:
            a = ans.lower().strip().replace("\n", " ")
            p = prediction.lower().strip().replace("\n", " ")
        if a in p:
            return 1.0
    return 0.0
