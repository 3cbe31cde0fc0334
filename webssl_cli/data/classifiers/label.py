"""The ground-truth classifier: reads has_text / is_chart_or_document from the sample's JSON.

For synthetic data (``webssl data synth``) this is exact; it is what the other classifiers
are scored against and a fast stand-in for them in smoke studies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webssl_cli.data.classifiers.base import VERSIONS

VERSION = VERSIONS["label"]
_FIELD = {"light": "has_text", "heavy": "is_chart_or_document"}


class LabelClassifier:
    name = "label"
    version = VERSION

    def classify(
        self, images: list[np.ndarray], metas: list[dict[str, Any]], filter: str
    ) -> list[tuple[float, bool]]:
        # A sample without the field is not known to have text: it is dropped, not kept.
        out = []
        for meta in metas:
            keep = bool(meta.get(_FIELD[filter], False))
            out.append((1.0 if keep else 0.0, keep))
        return out
