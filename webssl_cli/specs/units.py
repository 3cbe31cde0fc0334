"""Human units for sample counts: ``500M``, ``2B``, ``2e9``, ``1_000_000``, ``20K``."""

from __future__ import annotations

import math
import re

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_PATTERN = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*([KMBGTkmbgt]?)\s*$")


def parse_count(value: object) -> int:
    """Parse a positive sample count; raises ValueError with a message naming the valid forms."""
    if isinstance(value, bool):
        raise ValueError(f"expected a positive count like 500M, 2B or 2e9, got {value!r}")
    if isinstance(value, int):
        number: float = value
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match:
            raise ValueError(f"expected a positive count like 500M, 2B or 2e9, got {value!r}")
        number = float(match.group(1).replace("_", "")) * _SUFFIX[match.group(2).upper()]
    else:
        raise ValueError(f"expected a positive count like 500M, 2B or 2e9, got {value!r}")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"a count must be positive and finite, got {value!r}")
    if abs(number - round(number)) > 1e-6 * max(1.0, abs(number)):
        raise ValueError(f"a count must be a whole number, got {value!r}")
    if number >= 1e15:  # the paper's largest budget is 8e9; counts are BIGINT columns downstream
        raise ValueError(f"a count must be below 1e15, got {value!r}")
    return int(round(number))


def format_count(n: int | float) -> str:
    """Short human form: 2000000000 -> '2B', 1500000 -> '1.5M', 640 -> '640'."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= scale:
            value = n / scale
            text = f"{value:.2f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{n:g}"
