"""Photographs for the synthetic corpus: natural-looking images with class objects, and the same
with words on them (signs and bare text in several fonts, sizes, angles and contrasts).

Also the vocabulary and ground-truth helpers shared with ``pages`` (charts, documents, tables).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from webssl_cli.data import painter as P

# Classes 0..9 are the shapes of natural images; the other kinds get a class of their own.
CLASS_NAMES = (*P.SHAPES, "chart", "document", "table")

_WORDS = (
    "open sale coffee hotel stop exit city park bank shop bread fresh music night market "
    "garden river north south east west school library museum station ticket airport taxi "
    "pizza burger books house green water light power street avenue road bridge central "
    "welcome hello summer winter spring autumn family travel island beach ocean mountain "
    "forest coast harbor pharmacy bakery cinema theater gallery studio office police fire "
    "hospital clinic dental garage parking entrance free best deal today only new quick "
    "star moon king queen royal golden silver urban metro express local fashion sport "
    "health energy smart digital design global vision future planet nature science"
)
_LABELS = (
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec Mon Tue Wed Thu Fri Sat Sun "
    "North South East West Apple Pear Plum Fig Kiwi Lime Oslo Rome Lima Cairo Delhi Tokyo Paris Quito "
    "Alpha Beta Gamma Delta Red Blue Gold Iron Gas Oil Coal Wind Solar"
)
WORDS = tuple(_WORDS.split())
LABELS = tuple(_LABELS.split())
CITIES = ("Oslo", "Rome", "Lima", "Cairo", "Delhi", "Tokyo", "Paris", "Quito")
FIELDS = ("Name", "Date", "Total", "Invoice", "Account", "Amount", "City", "Phone", "Order", "Due")
NAMES = ("Smith", "Garcia", "Chen", "Novak", "Okafor", "Larsen", "Ito", "Silva", "Khan", "Weber")
TITLES = (
    "Annual Report",
    "Sales by Region",
    "Monthly Revenue",
    "Invoice",
    "Order Summary",
    "Survey Results",
    "Budget Plan",
    "Quarterly Review",
    "Energy Use",
    "Rainfall",
    "Price List",
    "Inventory",
)


def pick(rng: np.random.Generator, seq: tuple[Any, ...] | list[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def rgb(name: str) -> tuple[int, int, int]:
    return P.PALETTE[name]


def new_meta(kind: str, cls: int, w: int, h: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "class": cls,
        "class_name": CLASS_NAMES[cls],
        "has_text": False,
        "is_chart_or_document": False,
        "words": [],
        "objects": [],
        "chart": None,
        "document": None,
        "width": w,
        "height": h,
    }


# Each class has a typical colour, as natural categories do (lemons are yellow, crows black):
# the class object takes it with probability TYPICAL_COLOUR_P where it stands out from the
# background (RGB distance >= 80), otherwise a palette colour that contrasts in luminance. Ten
# classes share eight colours, so colour alone cannot name every class: arrows are blue like
# squares, crescents yellow like stars. Measured (docs/smoke/learning.md): at CPU scale DINOv2
# learns an object's colour within a few hundred steps and its shape not at all, so without
# this a class probe measures nothing the smoke encoders can learn.
CLASS_COLOURS = dict(zip(P.SHAPES, (
    "red", "blue", "green", "yellow", "orange", "purple", "black", "white", "blue", "yellow"
), strict=True))  # fmt: skip
TYPICAL_COLOUR_P = 0.95


def class_colour(cls: int, bg: tuple[int, int, int], rng: np.random.Generator) -> str:
    """The colour of a class object drawn over ``bg`` (its background's mean colour)."""
    typical = CLASS_COLOURS[P.SHAPES[cls]]
    gap = float(np.linalg.norm(np.subtract(rgb(typical), bg, dtype=np.float64)))
    if rng.random() < TYPICAL_COLOUR_P and gap >= 80.0:
        return typical
    return P.contrasting(bg, rng, 0.2)


# ---- natural and scene text ----------------------------------------------------------------------
def natural(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    arr = P.smooth_background(rng, w, h)
    if rng.random() < 0.4:
        arr = P.add_texture(arr, rng)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    cls = int(rng.integers(len(P.SHAPES)))
    meta = new_meta("natural", cls, w, h)
    s = min(w, h)
    objects = []
    # Distractors first so that the class object sits on top.
    for _ in range(int(rng.integers(0, 4))):
        shape = pick(rng, P.SHAPES)
        color = pick(rng, P.COLOR_NAMES)
        r = s * rng.uniform(0.05, 0.1)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        bg = P.region_mean(arr, [int(cx - r), int(cy - r), int(cx + r), int(cy + r)])
        box = P.draw_shape(draw, shape, cx, cy, r, rgb(color), rng.uniform(0, 2 * math.pi), bg)
        objects.append({"shape": shape, "color": color, "bbox": box})
    r = s * rng.uniform(0.2, 0.32)
    cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.15, 0.15) * h
    bg = P.region_mean(arr, [int(cx - r), int(cy - r), int(cx + r), int(cy + r)])
    color = class_colour(cls, bg, rng)
    box = P.draw_shape(draw, P.SHAPES[cls], cx, cy, r, rgb(color), rng.uniform(0, 2 * math.pi), bg)
    objects.append({"shape": P.SHAPES[cls], "color": color, "bbox": box})
    meta["objects"] = objects
    return img, meta


def _overlap(a: list[int], b: list[int], pad: int) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def scene_text(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    img, meta = natural(rng, w, h)
    meta["kind"] = "scene_text"
    meta["has_text"] = True
    arr = np.asarray(img)
    s = min(w, h)
    words: list[str] = []
    taken: list[list[int]] = []
    for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.85 else 4):
        word = pick(rng, WORDS)
        if rng.random() < 0.4:
            word = word.upper()
        elif rng.random() < 0.5:
            word = word.capitalize()
        # Readable sizes: cap height from ~6% to ~17% of the short side (13-38 px at 224 px).
        family = str(pick(rng, P.FONT_FILES))
        fnt = P.font(family, max(9, int(s * rng.uniform(0.06, 0.17))))
        tw, th = P.text_size(fnt, word)
        if tw >= w - 4:
            fnt = P.font(family, int(fnt.size * (w - 8) / (tw + 1)))
            tw, th = P.text_size(fnt, word)
        angle = float(rng.uniform(-30, 30)) if rng.random() < 0.5 else 0.0
        # Words do not overlap each other (overlapping words are not readable).
        for _ in range(20):
            x = rng.uniform(0, max(1, w - tw - 8))
            y = rng.uniform(0, max(1, h - th * 1.6 - 8))
            guess = [int(x), int(y), int(x + tw), int(y + th * 1.6)]
            if not any(_overlap(guess, b, 4) for b in taken):
                break
        else:
            break
        if rng.random() < 0.45:  # a sign: text on a plate
            plate_name = pick(rng, P.COLOR_NAMES)
            plate = rgb(plate_name)
            ink = P.contrasting(plate, rng, 0.4)
            box = P.draw_text(img, (x, y), word, fnt, rgb(ink), angle, plate=plate)
        else:  # bare text: contrast against what is under it, from faint-but-readable up
            ink = P.contrasting(P.region_mean(arr, guess), rng, float(rng.uniform(0.25, 0.6)))
            box = P.draw_text(img, (x, y), word, fnt, rgb(ink), angle)
        words.append(word)
        taken.append(box)
        meta.setdefault("text_boxes", []).append({"word": word, "bbox": box, "angle": angle})
    meta["words"] = words
    return img, meta
