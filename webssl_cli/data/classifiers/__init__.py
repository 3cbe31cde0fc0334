"""Image classifiers for the light/heavy text filters: ``label``, ``ocr`` and ``vlm``.

A classifier has a ``name``, a ``version`` (part of the filter's cache key: change it when its
decisions change) and ``classify(images, metas, filter) -> [(score, keep)]`` over a batch of
RGB uint8 arrays and the samples' JSON.
"""

from __future__ import annotations

from webssl_cli.data.classifiers.base import (
    CLASSIFIERS,
    FILTERS,
    VERSIONS,
    Classifier,
    check_choice,
)
from webssl_cli.errors import UserError

__all__ = ["CLASSIFIERS", "FILTERS", "VERSIONS", "Classifier", "check_choice", "make_classifier"]


def make_classifier(name: str, vlm_path: str | None = None, threads: int = 1) -> Classifier:
    """Build a classifier by name (imports its heavy dependencies only now)."""
    check_choice("light", name)
    if name == "label":
        from webssl_cli.data.classifiers.label import LabelClassifier

        return LabelClassifier()
    if name == "ocr":
        try:
            from webssl_cli.data.classifiers.ocr import OcrClassifier
        except ModuleNotFoundError as exc:
            raise UserError(
                f"--classifier ocr needs rapidocr-onnxruntime ({exc.name} is missing); pip install 'webssl[filter]'"
            ) from None
        return OcrClassifier(threads=threads)
    from webssl_cli.data.classifiers.vlm import VlmClassifier

    if not vlm_path:
        raise UserError("--classifier vlm needs --vlm-path: a local SmolVLM2-class model directory")
    return VlmClassifier(vlm_path)
