"""Answer extraction for free-form answers: MathVista's normalisation by answer type and MMMU's
response parsing. Both authors extract with rules first (MathVista then asks GPT-4 when its
rules fail; here the rules' fallback is the last number or option letter in the answer)."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from webssl_cli.eval.metrics.choice import LETTERS, extract_choice
from webssl_cli.eval.metrics.text import levenshtein

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")


def _last_number(text: str) -> str | None:
    nums = _NUMBER.findall(text)
    return nums[-1].replace(",", "") if nums else None


# ---- MathVista ---------------------------------------------------------------------------------
def mathvista_extract(
    response: str, question_type: str, answer_type: str, choices: Sequence[str] | None
) -> str:
    """MathVista's extraction (lupantech/MathVista, evaluation/extract_answer.py): an empty
    answer stays empty; an answer that is one of the choices, an integer or a float is taken
    as it is; 'The answer is "X".' gives X. Its GPT-4 step is replaced by a rule: the option
    letter or text a multiple-choice answer names, else the last number for numeric types."""
    text = response.strip()
    if not text:
        return ""
    if question_type == "multi_choice" and choices and text in choices:
        return text
    if answer_type in ("integer", "float"):
        try:
            return str(int(text)) if answer_type == "integer" else str(float(text))
        except ValueError:
            pass
    m = re.search(r'[Tt]he answer is "(.*)"\.', text)
    if m:
        return m.group(1)
    if question_type == "multi_choice" and choices:
        letter = extract_choice(text, list(choices))
        return choices[LETTERS.index(letter)] if letter else text
    if answer_type in ("integer", "float"):
        return _last_number(text) or text
    return text


def mathvista_normalize(
    extraction: str,
    question_type: str,
    answer_type: str,
    choices: Sequence[str] | None,
    precision: int | None,
) -> str | None:
    """MathVista's ``normalize_extracted_answer`` (evaluation/calculate_score.py): a
    multiple-choice extraction becomes a choice's text, "(B)" or "B" by its letter, anything
    else the choice nearest in Levenshtein distance (so even an empty answer picks a choice, as
    the reference does); integers as ``str(int(float(x)))``; floats rounded to the question's
    precision; lists and text kept as they are. None when a number does not parse."""
    text = extraction.strip()
    if question_type == "multi_choice" and choices:
        m = re.findall(r"\(([a-zA-Z])\)", text)
        if m:
            text = m[0].upper()
        letters = LETTERS[: len(choices)]
        if len(text) == 1 and text in letters:
            return choices[letters.index(text)]
        dists = [levenshtein(text, c) for c in choices]
        return choices[dists.index(min(dists))]
    try:
        if answer_type == "integer":
            return str(int(float(text)))
        if answer_type == "float":
            return str(round(float(text), precision if precision is not None else 1))
    except ValueError:
        return None
    return text


def mathvista_correct(
    response: str,
    answer: str,
    question_type: str,
    answer_type: str,
    choices: Sequence[str] | None = None,
    precision: int | None = None,
) -> float:
    """1.0 when the normalised extraction equals the answer string (MathVista's ``safe_equal``)."""
    pred = mathvista_normalize(
        mathvista_extract(response, question_type, answer_type, choices),
        question_type,
        answer_type,
        choices,
        precision,
    )
    return float(pred is not None and pred == answer.strip())


# ---- MMMU --------------------------------------------------------------------------------------
def mmmu_parse_choice(response: str, choices: Sequence[str]) -> str | None:
    """MMMU's ``parse_multi_choice_response`` (MMMU-Benchmark/MMMU, mmmu/utils/eval_utils.py):
    after stripping end punctuation, a bracketed letter "(B)", else a letter between spaces,
    else (answers over five words) an option's text; with several candidates the last one in
    the answer wins. The reference guesses at random when nothing matches; here that is None
    (wrong), so scores are deterministic."""
    text = response
    for ch in ",.!?;:'":
        text = text.strip(ch)
    text = f" {text} "
    letters = list(LETTERS[: len(choices)])
    found = [c for c in letters if f"({c})" in text]
    positions = {c: text.rfind(f"({c})") for c in found}
    if not found:
        found = [c for c in letters if f" {c} " in text]
        positions = {c: text.rfind(f" {c} ") for c in found}
    if not found and len(text.split()) > 5:
        low = text.lower()
        found = [c for c, opt in zip(letters, choices, strict=True) if opt.lower() in low]
        positions = {c: low.rfind(choices[letters.index(c)].lower()) for c in found}
    if not found:
        return None
    return max(found, key=lambda c: positions[c])


def _mmmu_numbers(text: str) -> list[str]:
    with_commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", text)
    return with_commas + scientific + simple


def _mmmu_normalize(text: str) -> list[str | float]:
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        pass
    low = text.lower()
    # a one-letter answer must stand alone in the response, hence the padded forms
    return [" " + low, low + " "] if len(low) == 1 else [low]


def mmmu_parse_open(response: str) -> list[str | float]:
    """MMMU's ``parse_open_response``: per line, the shortest text after a key phrase ("so ",
    "is ", "therefore ", "answer ", ..., "=" in the last line), else the whole answer; plus the
    numbers in those; each normalised (numbers as floats rounded to 2 places, text lower-cased)."""
    text = response.strip().strip(".").lower()
    lines = re.split(r"\.\s(?=[A-Z])|\n", text)
    keys = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    picked: list[str] = []
    for i, line in enumerate(lines):
        indicators = keys + (["="] if i == len(lines) - 1 else [])
        shortest: str | None = None
        for k in indicators:
            if k in line:
                tail = line.split(k)[-1].strip()
                # as the reference: an empty tail is replaced by the next one, and a shorter
                # tail (an empty one included) replaces a longer one
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest not in (":", ",", ".", "!", "?", ";", "'"):
            picked.append(shortest)
    if not picked:
        picked = [text]
    candidates = picked + [n for p in picked for n in _mmmu_numbers(p)]
    out: list[str | float] = []
    for c in candidates:
        for v in _mmmu_normalize(c):
            if v not in out:
                out.append(v)
    return out


def mmmu_answers(answer: str) -> list[str]:
    """MMMU's answer field: one answer, or a Python-literal list of accepted answers."""
    text = answer.strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return [text]
        if isinstance(value, list):
            return [str(v) for v in value]
    return [text]


def mmmu_correct(response: str, answer: str, choices: Sequence[str] | None = None) -> float:
    """MMMU: multiple choice by ``eval_multi_choice`` (the parsed letter is the answer's),
    open questions by ``eval_open`` (a normalised number equals an answer's, or an answer's
    normalised text is inside a parsed text)."""
    golds = mmmu_answers(answer)
    if choices:
        return float(mmmu_parse_choice(response, choices) in golds)
    norm_golds = [v for g in golds for v in _mmmu_normalize(g)]
    for pred in mmmu_parse_open(response):
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in norm_golds):
                return 1.0
        elif pred in norm_golds:
            return 1.0
    return 0.0
