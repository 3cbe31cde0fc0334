"""The base of every model parsed from user files: frozen and closed (unknown keys fail)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Frozen, closed pydantic model. Field docstrings are the user documentation."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
