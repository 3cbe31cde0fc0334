"""The classifier interface and the filter/classifier names (no heavy imports).

A classifier has a ``name``, a ``version`` (part of the filter's cache key: change it when its
decisions change) and ``classify(images, metas, filter) -> [(score, keep)]`` over a batch of
RGB uint8 arrays and the samples' JSON.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from webssl_cli.errors import UserError, did_you_mean

FILTERS = ("light", "heavy")
CLASSIFIERS = ("ocr", "vlm", "label")
# Part of the filter cache key: bump a version when that classifier's decisions change.
VERSIONS = {"ocr": "1", "vlm": "1", "label": "1"}


class Classifier(Protocol):
    name: str
    version: str

    def classify(
        self, images: list[np.ndarray], metas: list[dict[str, Any]], filter: str
    ) -> list[tuple[float, bool]]: ...


def check_choice(filter: str, classifier: str) -> None:
    if filter not in FILTERS:
        raise UserError(
            f"--filter: unknown filter {filter!r}{did_you_mean(filter, FILTERS)}; valid: {', '.join(FILTERS)}"
        )
    if classifier not in CLASSIFIERS:
        raise UserError(
            f"--classifier: unknown classifier {classifier!r}{did_you_mean(classifier, CLASSIFIERS)}; "
            f"valid: {', '.join(CLASSIFIERS)}"
        )
