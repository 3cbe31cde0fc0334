"""The ``resolution`` axis: cells above the base resolution are high-resolution adaptations.

A cell's base resolution is its resolved ``train.crops.global_size`` (the preset's, unless the
study sets it). At that resolution (or without the axis) a cell is what it always was: same
settings, same uid. Above it, the cell continues from the base cell (the same model, method,
data filter, samples seen, seed and settings at the base resolution), which must be in the
study: it trains the preset's adaptation recipe (``specs.presets.ADAPT_RECIPES``, overridden by
the study's ``adapt`` block) at the new resolution, for the recipe's iterations. Its uid hashes
the base cell's uid, the resolution, its resolved settings and its length, so editing the base
cell changes the adaptations built on it too.

Crops at the new resolution: the global crops are the resolution; the local crops scale by the
same factor, rounded to whole patches (DINOv2's 98 px local crops: 168 px at 378, 224 px at
518); the crop scale ranges and counts stay.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from pydantic import ValidationError

from webssl_cli.specs.presets import ADAPT_RECIPES
from webssl_cli.specs.registry import get_model
from webssl_cli.specs.train import TrainConfig
from webssl_cli.study import grid as G
from webssl_cli.study.schema import Study
from webssl_cli.study.settings import deep_merge, nest
from webssl_cli.study.yamlfile import Loc, SourceMap


def scaled_local_size(local: int, resolution: int, base: int, patch: int) -> int:
    """The local crop side scaled by resolution / base, rounded (half up) to whole patches."""
    patches = int(local * resolution / base / patch + 0.5)
    return max(1, patches) * patch


def adapt_uid(base_uid: str, resolution: int, train_hash: str, iterations: int) -> str:
    text = f"{G.UID_VERSION}|adapt|{base_uid}|{resolution}|{train_hash}|{iterations}"
    return hashlib.sha256(text.encode()).hexdigest()[: G.UID_LENGTH]


class Adapter:
    """Turns a cell with a ``resolution`` above its base into an adaptation cell."""

    def __init__(self, study: Study, smap: SourceMap) -> None:
        self.smap = smap
        try:
            recipe = deep_merge(
                copy.deepcopy(ADAPT_RECIPES.get(study.preset, {})), nest(study.adapt)
            )
        except ValueError as exc:
            raise smap.error(("adapt",), str(exc)) from None
        self.iterations = recipe.pop("iterations", None)
        self.recipe = recipe
        self.default_train = TrainConfig().model_dump(mode="json")
        self.cache: dict[tuple[int, int, str], tuple[dict[str, Any], str]] = {}

    def resolve(
        self, cax: dict[str, Any], uid: str, train: dict[str, Any], loc: Loc
    ) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """(uid, train dict, adaptation) of a cell; the adaptation is None at the base
        resolution ({from, resolution, base_resolution, iterations} above it)."""
        res = cax.get("resolution")
        base = int(train["crops"]["global_size"])
        if res is None or res == base:
            return uid, train, None
        if res < base:
            raise self.smap.error(
                loc,
                f"resolution {res} is below the base resolution {base} (train.crops."
                "global_size); adaptation goes from the base up: give the base or higher",
            )
        method = cax.get("method", "webdino")
        if method != "webdino":
            raise self.smap.error(
                loc,
                f"resolution {res}: high-resolution adaptation follows Web-DINO's recipe (its "
                f"teacher and heads); a {method} cell stays at its base resolution {base}: "
                "limit the resolution axis to method webdino with include/exclude",
            )
        patch = get_model(cax["model"]).patch
        if res % patch:
            raise self.smap.error(
                loc,
                f"resolution {res} is not a whole number of {patch} px patches of "
                f"{cax['model']}; use a multiple of {patch}",
            )
        iterations = self.iterations
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise self.smap.error(
                ("adapt",), f"iterations: a positive number of steps, got {iterations!r}"
            )
        key = (id(train), res, cax["model"])
        cached = self.cache.get(key)
        if cached is None:
            cached = self.cache[key] = self._train(train, res, base, patch, loc)
        tdict, thash = cached
        info = {"from": uid, "resolution": res, "base_resolution": base,
                "iterations": iterations}  # fmt: skip
        return adapt_uid(uid, res, thash, iterations), tdict, info

    def _train(
        self, train: dict[str, Any], res: int, base: int, patch: int, loc: Loc
    ) -> tuple[dict[str, Any], str]:
        crops = train["crops"]
        over = {
            # the teacher is trained: its temperature stays at the base's final value
            "teacher_temp": train["teacher_temp_end"],
            "teacher_temp_warmup_iters": 0,
            **self.recipe,
            "crops": {
                **self.recipe.get("crops", {}),
                "global_size": res,
                "local_size": scaled_local_size(int(crops["local_size"]), res, base, patch),
            },
        }
        try:
            cfg = TrainConfig.model_validate(deep_merge(train, over))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in err["loc"])
            raise self.smap.error(("adapt",), f"{field}: {err['msg']}") from None
        tdict = cfg.model_dump(mode="json")
        return tdict, G.short_hash(G.train_identity(tdict, self.default_train), 16)


def check_bases(cells: list[G.Cell], origins: dict[str, Loc], smap: SourceMap) -> None:
    """Every adaptation cell's base cell is in the study."""
    uids = {c.uid for c in cells}
    for cell in cells:
        if cell.adapt is not None and cell.adapt["from"] not in uids:
            a = cell.adapt
            others = {k: v for k, v in cell.axes.items() if k != "resolution"}
            raise smap.error(
                origins[cell.uid],
                f"the {a['resolution']} px cell {others} adapts the {a['base_resolution']} px "
                f"cell of the same axes, which the study does not hold; add "
                f"{a['base_resolution']} to resolution (or an include entry for it)",
            )
