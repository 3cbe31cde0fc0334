"""The segmentation and depth eval configurations, as a study's evals list reads them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from webssl_cli.specs.evals import (
    EVAL_CLASSES,
    EVAL_TASKS,
    DepthEval,
    EvalConfig,
    SegmentationEval,
)

_ADAPTER: TypeAdapter[Any] = TypeAdapter(EvalConfig)


def test_defaults_follow_the_protocols() -> None:
    seg = _ADAPTER.validate_python({"task": "segmentation"})
    assert isinstance(seg, SegmentationEval) and seg.stage_name == "segmentation"
    assert (
        seg.head == "linear" and seg.dataset == "synth-dense" and seg.baselines == ("random-init",)
    )
    dep = _ADAPTER.validate_python({"task": "depth", "dataset": "/data/nyu/shard-*.tar", "crop": "eigen",
                                    "head": "multilayer", "lrs": [1e-3]})  # fmt: skip
    assert isinstance(dep, DepthEval)
    assert (dep.mode, dep.n_bins, dep.bins_upsample, dep.max_depth, dep.min_depth) == (
        "bins",
        256,
        4,
        10.0,
        1e-3,
    )
    assert dep.crop == "eigen" and dep.head == "multilayer" and dep.lrs == (1e-3,)
    assert set(EVAL_TASKS) == set(EVAL_CLASSES) and EVAL_CLASSES["depth"] is DepthEval


@pytest.mark.parametrize(
    "bad",
    [
        {"task": "segmentation", "head": "ms"},
        {"task": "segmentation", "ignore_label": 300},
        {"task": "depth", "mode": "ordinal"},
        {"task": "depth", "crop": "garg"},
        {"task": "depth", "max_depht": 10},
    ],
)
def test_bad_values_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _ADAPTER.validate_python(bad)
