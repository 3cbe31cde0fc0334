"""The base of every model parsed from user files: frozen and closed (unknown keys fail).

Every number has an upper bound, so that a value that validates also fits everything
downstream (int32 counters in training, BIGINT columns in the results database, RNG seeds):
integers below 2**31 (a seed, a step count, a size), sample and parameter counts below 1e15,
floating-point values finite and below 1e30 in magnitude. The bound is in the error message.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

INT_BOUND = 2**31  # exclusive: seeds, iterations, sizes, counts
COUNT_BOUND = 10**15  # exclusive: samples seen, parameters, optimiser steps
FLOAT_BOUND = 1e30
_COUNT_FIELDS = frozenset({"samples_seen", "params", "iterations", "samples"})


def check_bounds(value: Any, name: str, inner: str = "") -> Any:
    """``value`` if it is inside the bounds above for a field called ``name``, else ValueError
    (naming the key inside a dict or list value, for free-form settings such as ``train``)."""
    where = f"{inner}: " if inner else ""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        bound = COUNT_BOUND if name in _COUNT_FIELDS else INT_BOUND
        if not -INT_BOUND < value < bound:
            limit = "1e15" if bound == COUNT_BOUND else f"2**31 ({bound})"
            raise ValueError(f"{where}must be below {limit}, got {value}")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= FLOAT_BOUND:
            raise ValueError(f"{where}must be a finite number below 1e30 in magnitude, got {value}")
    elif isinstance(value, dict):
        for k, v in value.items():
            key = str(k)
            check_bounds(
                v, key if key in _COUNT_FIELDS else name, f"{inner}.{key}" if inner else key
            )
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_bounds(v, name, f"{inner}[{i}]")
    return value


class Frozen(BaseModel):
    """Frozen, closed pydantic model. Field docstrings are the user documentation."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        return check_bounds(value, info.field_name or "")
