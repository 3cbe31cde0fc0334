"""Metrics on hand-written cases, including the normalisation edge cases of each reference."""

from __future__ import annotations

import pytest

from webssl_cli.eval import metrics as m


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Two", "2"),
        ("the dog.", "dog"),  # article dropped, final period stripped
        ("3.5", "3.5"),  # a period before a digit stays
        ("black-white", "black white"),  # hyphen without spaces -> space
        ("yes , sir", "yes sir"),  # punctuation next to a space -> deleted
        ("1,000", "1000"),  # digit,digit -> commas deleted
        ("dont", "don't"),  # contraction restored
        ("An Apple\tTree\n", "apple tree"),
        ("none", "0"),
        ("What's that?", "what's that"),
    ],
)
def test_vqa_normalisation(raw: str, norm: str) -> None:
    assert m.normalize_vqa_answer(raw) == norm


def test_vqa_accuracy_leave_one_out() -> None:
    ten = ["cat"] * 3 + ["dog"] * 7
    # each of the 3 "cat" subsets sees 2 other cats (2/3); each of the 7 others sees 3 (1)
    assert m.vqa_accuracy("cat", ten) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert m.vqa_accuracy("Dog.", ten) == 1.0
    assert m.vqa_accuracy("bird", ten) == 0.0
    one = ["cat"] + ["dog"] * 9
    assert m.vqa_accuracy("a cat", one) == pytest.approx(9 * (1 / 3) / 10)
    assert m.vqa_accuracy("two", ["2"]) == 1.0  # a single answer: exact after normalisation
    with pytest.raises(ValueError):
        m.vqa_accuracy("x", [])


def test_anls() -> None:
    assert m.anls("Hello World", ["hello  world"]) == 1.0
    assert m.anls("helo world", ["hello world"]) == pytest.approx(1 - 1 / 11)
    assert m.anls("abcdef", ["abcxyz"]) == 0.0  # NL = 0.5 is not < 0.5
    assert m.anls("abcdeg", ["abcdef"]) == pytest.approx(1 - 1 / 6)
    assert m.anls("foo", ["bar", "fooo"]) == pytest.approx(0.75)  # best over answers
    assert m.anls("", [""]) == 1.0


def test_relaxed_accuracy() -> None:
    assert m.relaxed_accuracy("104", "100") == 1.0
    assert m.relaxed_accuracy("105", "100") == 1.0  # exactly 5% counts
    assert m.relaxed_accuracy("106", "100") == 0.0
    assert m.relaxed_accuracy("45%", "0.45") == 1.0
    assert m.relaxed_accuracy("0.46", "45%") == 1.0
    assert m.relaxed_accuracy("Yes", "yes") == 1.0
    assert m.relaxed_accuracy("0.01", "0") == 0.0  # zero target: exact match only
    assert m.relaxed_accuracy("0", "0") == 1.0
    assert m.relaxed_accuracy("Apples", "apple") == 0.0


def test_exact_match() -> None:
    assert m.exact_match(" Red. ", ["red"]) == 1.0
    assert m.exact_match("dark red", "red") == 0.0


@pytest.mark.parametrize(
    ("pred", "letter"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("D. a dog", "D"),
        ("The answer is A.", "A"),
        ("I think (B) fits", "B"),
        ("cat", "C"),
    ],
)
def test_extract_choice(pred: str, letter: str) -> None:
    assert m.extract_choice(pred, ["dog", "bird", "cat", "fish"]) == letter


def test_multiple_choice_and_circular() -> None:
    choices = ["red", "green", "blue"]
    assert m.multiple_choice_accuracy("B", "B", choices) == 1.0
    assert m.multiple_choice_accuracy("green", "green", choices) == 1.0
    assert m.multiple_choice_accuracy("E", "B", choices) == 0.0  # not an option
    shifts = m.circular_shifts(choices, answer_index=1)
    assert shifts[0] == (["red", "green", "blue"], "B")
    assert shifts[1] == (["green", "blue", "red"], "A")
    assert shifts[2] == (["blue", "red", "green"], "C")
    assert m.circular_accuracy({"q1": [True, True, True], "q2": [True, False, True]}) == 0.5


def test_mme_score() -> None:
    recs = [
        ("existence", "img1", True), ("existence", "img1", True),
        ("existence", "img2", True), ("existence", "img2", False),
        ("OCR", "img3", False), ("OCR", "img3", False),
        ("code_reasoning", "img4", True), ("code_reasoning", "img4", True),
    ]  # fmt: skip
    out = m.mme_score(recs)
    assert out["subtasks"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert out["perception"] == 125.0  # existence 125 + OCR 0
    assert out["cognition"] == 200.0
    assert m.yes_no("Yes, there is.") == "yes" and m.yes_no("maybe") is None


def test_category_scores() -> None:
    scores = {
        "MME": 1500.0,
        "GQA": 60.0,
        "ChartQA": 40.0,
        "DocVQA": 50.0,
        "MMVP": 30.0,
        "AI2D": 70.0,
    }
    out = m.category_scores(scores)
    assert out["General"] == pytest.approx((75.0 + 60.0) / 2)  # MME / 20 = 75
    assert out["OCR & Chart"] == pytest.approx(45.0)
    assert out["Vision-Centric"] == pytest.approx(30.0)
    assert out["Knowledge"] == pytest.approx(70.0)
    assert out["Average"] == pytest.approx((67.5 + 45.0 + 30.0 + 70.0) / 4)
    with pytest.raises(ValueError, match="unknown benchmark"):
        m.category_scores({"VQAv2": 1.0})
    assert set(m.category_scores({"TextVQA": 10.0})) == {"OCR & Chart", "Average"}


def test_mme_yes_no_reading() -> None:
    # the answer itself, else "yes"/"no" within its first four characters
    assert m.yes_no("Yes") == "yes" and m.yes_no("no.") == "no"
    assert m.yes_no("Yes, there is a dog.") == "yes"
    assert m.yes_no("Not at all") == "no"  # "not " holds "no"
    assert m.yes_no("There is no dog") is None and m.yes_no("") is None


def test_mathvista_extraction_and_normalisation() -> None:
    mc = ["3", "5", "7"]
    assert m.mathvista_correct("(B) 5", "5", "multi_choice", "text", mc) == 1.0
    assert m.mathvista_correct("7", "5", "multi_choice", "text", mc) == 0.0
    # Levenshtein ties (all 1 edit) pick the first choice, "3"
    assert m.mathvista_normalize("6", "multi_choice", "text", mc, None) == "3"
    assert m.mathvista_correct("12.0", "12", "free_form", "integer") == 1.0
    assert m.mathvista_correct('The answer is "12".', "12", "free_form", "integer") == 1.0
    assert m.mathvista_correct("3.14159", "3.14", "free_form", "float", precision=2) == 1.0
    assert m.mathvista_correct("3.14159", "3.1", "free_form", "float", precision=2) == 0.0
    assert m.mathvista_correct("[1, 2]", "[1, 2]", "free_form", "list") == 1.0


def test_mmmu_parsing() -> None:
    opts = ["oil", "ink", "clay", "wax"]
    assert m.mmmu_parse_choice("(C)", opts) == "C"
    assert m.mmmu_parse_choice("B.", opts) == "B"
    assert m.mmmu_parse_choice("I think (A) or maybe (D)", opts) == "D"  # the last wins
    assert m.mmmu_parse_choice("The painting is made with clay on a board", opts) == "C"
    assert m.mmmu_parse_choice("clay", opts) is None  # short answers: letters only
    assert m.mmmu_correct("Therefore the answer is 1,000", "1000") == 1.0
    assert m.mmmu_correct("x = 2.004", "2") == 1.0  # numbers rounded to 2 places
    assert m.mmmu_correct("the answer is bob", "b") == 0.0  # one letter must stand alone
    assert m.mmmu_correct("the answer is b", "b") == 1.0
    assert m.mmmu_correct("so it is paris", "['Paris', 'Lyon']") == 1.0


def test_ocrbench_matching() -> None:
    assert m.ocrbench_match("It says HELLO.", ["hello"], "Regular Text Recognition") == 1.0
    assert m.ocrbench_match("a\nb", ["a b"], "Doc-oriented VQA") == 1.0
    assert m.ocrbench_match("\\frac{1}{2}", ["\\frac {1} {2}"], m.OCRBENCH_HME) == 1.0
    assert m.ocrbench_match("\\FRAC{1}{2}", ["\\frac{1}{2}"], m.OCRBENCH_HME) == 0.0
