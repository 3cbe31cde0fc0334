"""Multiple choice: option-letter extraction, MMBench's circular rotations, MME's yes/no
reading."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

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
    """MMBench's circular evaluation (open-compass/VLMEvalKit, vlmeval/dataset/utils/
    multiple_choice.py ``eval_vanilla``/circular grouping by ``index % 1e6``): the fraction of
    questions (keyed by their original id) answered right in every rotation."""
    if not results:
        return 0.0
    return sum(all(v) for v in results.values()) / len(results)


def yes_no(prediction: str) -> str | None:
    """MME's answer reading (BradyFU/Awesome-Multimodal-Large-Language-Models, Evaluation
    branch, tools/eval_tool/calculation.py ``parse_pred_ans``): the lower-cased answer is
    'yes' or 'no' itself, or its first four characters contain 'yes' (then 'no'); else None."""
    low = prediction.strip().lower()
    if low in ("yes", "no"):
        return low
    head = low[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return None
