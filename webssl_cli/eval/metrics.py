"""VQA metrics with the reference behaviour of each benchmark's official evaluation, and the
paper's category aggregation. Plain functions on strings; no torch.

- ``vqa_accuracy``: the VQA challenge evaluation (vqaEval.py): punctuation handling, number
  words -> digits, articles dropped, contractions restored; then the mean over the leave-one-out
  subsets of the answers of ``min(#matches / 3, 1)``.
- ``anls``: DocVQA's Average Normalized Levenshtein Similarity, threshold 0.5, best over answers.
- ``relaxed_accuracy``: ChartQA (pix2struct's ``relaxed_correctness``): 5% relative tolerance
  for numbers, "12%" read as 0.12, exact case-insensitive match otherwise.
- ``multiple_choice_accuracy`` with option-letter extraction; ``circular_accuracy`` for MMBench's
  circular evaluation; ``mme_score`` (accuracy + accuracy+ per subtask); ``exact_match``.
- ``category_scores``: MME perception / 20, a category is the mean of its benchmarks present,
  the average is the mean of the categories.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from webssl_cli.specs.categories import (  # noqa: F401  (the scorers' public names)
    BENCHMARK_CATEGORY,
    CATEGORIES,
    category_scores,
    mean_by_category,
)

# ---- VQA answer normalisation (the official evaluation's tables) ----------------------------
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]  # fmt: skip
# The official pattern, kept as written: "(?!<=" is a (harmless) typo for a look-behind, so a
# period is removed unless a digit follows it ("3.5" survives, "dog." loses its period).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        # A punctuation mark next to a space, or any "1,000"-style number, deletes the mark;
        # otherwise it becomes a space ("black-white" -> "black white").
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(text: str) -> str:
    """The official VQA normalisation of a predicted answer."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy: mean over leave-one-out subsets of the answers of min(#matches / 3, 1).

    The official script normalises the prediction fully and the ground-truth answers only for
    punctuation, because VQA's annotations were already lower-cased with digits. Benchmark files
    outside VQA v2 (TextVQA, ...) carry raw answers, so both sides get the full normalisation
    here, as lmms-eval does; for VQA v2 answers the two are identical. A single answer counts as
    ten identical annotations (a match scores 1).
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(a) for a in answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        accs.append(min(1.0, sum(g == pred for g in others) / 3.0))
    return sum(accs) / len(accs)


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
    """DocVQA ANLS for one question: max over answers of 1 - NL if NL < threshold else 0, where
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
    """ChartQA relaxed accuracy: numbers within ``tolerance`` relative change of the target
    count ("45%" reads as 0.45); a zero or non-numeric target needs an exact case-insensitive
    match (as pix2struct's reference ``relaxed_correctness``)."""
    pred, tgt = prediction.strip(), target.strip()
    pred_f, tgt_f = _to_float(pred), _to_float(tgt)
    if pred_f is not None and tgt_f:
        return float(abs(pred_f - tgt_f) / abs(tgt_f) <= tolerance)
    return float(pred.lower() == tgt.lower())


# ---- exact match, multiple choice, yes/no ------------------------------------------------------
def exact_match(prediction: str, answers: list[str] | str) -> float:
    """Case-insensitive match after collapsing whitespace and trailing punctuation."""
    answers = [answers] if isinstance(answers, str) else answers

    def norm(s: str) -> str:
        return " ".join(s.strip().lower().split()).strip(".,;:!? ")

    return float(norm(prediction) in {norm(a) for a in answers})


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER_PATTERNS = [
    re.compile(r"^\s*\(?([A-Z])\)?\s*$"),  # "B", "(B)"
    re.compile(r"^\s*\(?([A-Z])[).:,]"),  # "B.", "(B) cat", "B: cat"
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Z])\b\)?", re.IGNORECASE),
    re.compile(r"\(([A-Z])\)"),  # "... (C) ..."
    re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])"),  # a lone capital letter anywhere
]


def extract_choice(prediction: str, choices: Sequence[str] | None = None) -> str | None:
    """The option letter a free-form answer picks, or None.

    Tries, in order: the answer is a letter ("B", "(B)", "B."), "the answer is B", a
    parenthesised letter, a lone capital letter; then, with ``choices``, the one option whose
    text the answer equals or contains (MMBench's matching fallback).
    """
    n = len(choices) if choices is not None else len(LETTERS)
    valid = LETTERS[:n]
    for pattern in _LETTER_PATTERNS:
        m = pattern.search(prediction)
        if m and m.group(1).upper() in valid:
            return m.group(1).upper()
    if choices:
        low = " ".join(prediction.lower().split()).strip(".!? ")
        for i, c in enumerate(choices):
            if low == c.lower().strip():
                return LETTERS[i]
        hits = [i for i, c in enumerate(choices) if c.strip() and c.lower().strip() in low]
        if len(hits) == 1:
            return LETTERS[hits[0]]
    return None


def multiple_choice_accuracy(
    prediction: str, answer: str, choices: Sequence[str] | None = None
) -> float:
    """1.0 when the option extracted from ``prediction`` is ``answer`` (a letter, or the
    correct option's text when ``choices`` are given)."""
    target = answer.strip()
    if len(target) != 1 and choices is not None:
        lowered = [c.lower().strip() for c in choices]
        if target.lower() in lowered:
            target = LETTERS[lowered.index(target.lower())]
    return float(extract_choice(prediction, choices) == target.upper())


def circular_shifts(choices: Sequence[str], answer_index: int) -> list[tuple[list[str], str]]:
    """MMBench circular evaluation: the question asked once per rotation of its options.
    Returns (rotated choices, correct letter) pairs."""
    n = len(choices)
    out = []
    for s in range(n):
        rotated = [choices[(i + s) % n] for i in range(n)]
        out.append((rotated, LETTERS[(answer_index - s) % n]))
    return out


def circular_accuracy(results: Mapping[str, Iterable[bool]]) -> float:
    """Fraction of questions (keyed by their original id) answered right in every rotation."""
    if not results:
        return 0.0
    return sum(all(v) for v in results.values()) / len(results)


def yes_no(prediction: str) -> str | None:
    """MME's answer reading: 'yes' or 'no' when the answer starts with one, else None."""
    words = re.findall(r"[a-z]+", prediction.lower())
    if words and words[0] in ("yes", "no"):
        return words[0]
    return None


# ---- MME -----------------------------------------------------------------------------------------
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
                  "landmark", "artwork", "OCR")  # fmt: skip
MME_COGNITION = (
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
)


def mme_score(records: Iterable[tuple[str, str, bool]]) -> dict[str, object]:
    """MME: per subtask, accuracy (% of questions right) + accuracy+ (% of images with both of
    their questions right); the perception score is the sum over the perception subtasks (max
    2000), cognition likewise (max 800). ``records`` are (subtask, image id, correct)."""
    by_task: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for subtask, image, correct in records:
        by_task[subtask][image].append(bool(correct))
    subtasks: dict[str, dict[str, float]] = {}
    for task, images in by_task.items():
        flat = [c for cs in images.values() for c in cs]
        acc = 100.0 * sum(flat) / len(flat)
        acc_plus = 100.0 * sum(all(cs) for cs in images.values()) / len(images)
        subtasks[task] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
    perception = sum(v["score"] for k, v in subtasks.items() if k in MME_PERCEPTION)
    cognition = sum(v["score"] for k, v in subtasks.items() if k in MME_COGNITION)
    return {"subtasks": subtasks, "perception": perception, "cognition": cognition}
