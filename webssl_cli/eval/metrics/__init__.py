"""Benchmark metrics, each as its benchmark's authors score it (the source is named by each
function), and the paper's category aggregation. Plain functions on strings; no torch.

- ``vqa``: VQA accuracy with the official answer normalisation (VQA v2, TextVQA).
- ``text``: ANLS (DocVQA), relaxed accuracy (ChartQA), exact match (GQA), OCRBench matching.
- ``choice``: option-letter extraction, MMBench's circular rotations, MME's yes/no reading.
- ``answers``: MathVista's and MMMU's answer extraction and normalisation.
- ``groups``: MME's accuracy + accuracy+, OCRBench's category counts, CV-Bench's per-source
  averaging, MMVP's pair accuracy.
- ``category_scores``: MME perception / 20, a category is the mean of its benchmarks present,
  the average is the mean of the categories.
"""

from webssl_cli.eval.metrics.answers import (
    mathvista_correct,
    mathvista_extract,
    mathvista_normalize,
    mmmu_answers,
    mmmu_correct,
    mmmu_parse_choice,
    mmmu_parse_open,
)
from webssl_cli.eval.metrics.choice import (
    LETTERS,
    circular_accuracy,
    circular_shifts,
    extract_choice,
    multiple_choice_accuracy,
    yes_no,
)
from webssl_cli.eval.metrics.groups import (
    MME_COGNITION,
    MME_PERCEPTION,
    OCRBENCH_RECOGNITION,
    cvbench_score,
    mme_score,
    ocrbench_score,
    pair_accuracy,
)
from webssl_cli.eval.metrics.text import (
    OCRBENCH_HME,
    anls,
    exact_match,
    levenshtein,
    ocrbench_match,
    relaxed_accuracy,
)
from webssl_cli.eval.metrics.vqa import normalize_vqa_answer, vqa_accuracy
from webssl_cli.specs.categories import (
    BENCHMARK_CATEGORY,
    CATEGORIES,
    NATIVE_SCALE,
    as_fraction,
    category_scores,
    mean_by_category,
)

__all__ = [
    "BENCHMARK_CATEGORY", "CATEGORIES", "LETTERS", "MME_COGNITION", "MME_PERCEPTION",
    "NATIVE_SCALE", "OCRBENCH_HME", "OCRBENCH_RECOGNITION", "anls", "as_fraction", "category_scores", "circular_accuracy",
    "circular_shifts", "cvbench_score", "exact_match", "extract_choice", "levenshtein",
    "mathvista_correct", "mathvista_extract", "mathvista_normalize", "mean_by_category",
    "mme_score", "mmmu_answers", "mmmu_correct", "mmmu_parse_choice", "mmmu_parse_open",
    "multiple_choice_accuracy", "normalize_vqa_answer", "ocrbench_match", "ocrbench_score",
    "pair_accuracy", "relaxed_accuracy", "vqa_accuracy", "yes_no",
]  # fmt: skip
