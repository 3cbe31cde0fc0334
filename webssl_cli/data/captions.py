"""Web-like captions of the synthetic corpus, and the caption reader of any webdataset sample.

A synthetic image's caption is written from its ground truth the way alt-text and surrounding
text describe web images: often right and specific ("a red star on a textured background"),
sometimes partial (only a colour, only the words on a sign), sometimes generic or
boilerplate ("stock photo", "IMG_0412.jpg"), sometimes about something else entirely (a
caption of another class), and sometimes absent. The noise rates are ``NOISE``; each caption
draws from its own generator seeded by (seed, index, CAPTION_STREAM), so captions never
change the image or its JSON (drawn from (seed, index)) and the same seed gives the same
captions.

A sample's caption is its ``.txt`` member, else a ``.caption`` member, else a string
``caption`` field of its JSON; empty or undecodable text counts as no caption.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from webssl_cli.data.scenes import CLASS_NAMES, pick

CAPTION_STREAM = 0xC1
"""Third entry of a caption's seed sequence: keeps it apart from the image's (seed, index)."""

NOISE = {"missing": 0.08, "wrong": 0.1, "generic": 0.07, "partial": 0.2}
"""Probability of each kind of bad caption; the rest (55%) describe the image fully."""

_PHOTO = ("a photo of", "a picture of", "an image of", "photo of", "close-up of", "a close up of")
_GENERIC = (
    "stock photo",
    "image",
    "untitled",
    "free download",
    "click to enlarge",
    "wallpaper hd",
    "view full size",
    "photo",
    "thumbnail",
)
_BACKGROUNDS = ("on a plain background", "on a textured background", "", "", "in the middle")


def make_caption(meta: Mapping[str, Any], rng: np.random.Generator) -> str | None:
    """A caption of the image ``meta`` describes (its JSON ground truth), or None (missing)."""
    u = float(rng.random())
    cut = np.cumsum([NOISE[k] for k in ("missing", "wrong", "generic", "partial")])
    if u < cut[0]:
        return None
    if u < cut[1]:  # about another image: a full caption of another class
        other = int(rng.integers(len(CLASS_NAMES) - 1))
        other += other >= int(meta.get("class", 0))
        return _full(_fake_meta(other, rng), rng)
    if u < cut[2]:
        if rng.random() < 0.4:
            return f"IMG_{int(rng.integers(10000)):04d}.jpg"
        return str(pick(rng, _GENERIC))
    if u < cut[3]:
        return _partial(meta, rng)
    return _full(meta, rng)


def _main_object(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    objects = meta.get("objects") or []
    return objects[-1] if objects else None  # the class object is drawn last


def _quote(words: list[str], rng: np.random.Generator) -> str:
    n = min(len(words), int(rng.integers(1, 4)))
    return " ".join(str(w) for w in words[:n]).lower()


def _full(meta: Mapping[str, Any], rng: np.random.Generator) -> str:
    kind = meta.get("kind", "natural")
    name = str(meta.get("class_name", CLASS_NAMES[int(meta.get("class", 0))]))
    if kind in ("natural", "scene_text"):
        obj = _main_object(meta)
        color = f"{obj['color']} " if obj and rng.random() < 0.8 else ""
        text = f"{pick(rng, _PHOTO)} a {color}{name}"
        bg = str(pick(rng, _BACKGROUNDS))
        if bg:
            text += f" {bg}"
        others = (meta.get("objects") or [])[:-1]
        if others and rng.random() < 0.5:
            o = others[int(rng.integers(len(others)))]
            text += f" with a small {o['color']} {o['shape']}"
        if kind == "scene_text" and meta.get("words"):
            sign = "a sign" if meta.get("text_boxes") and rng.random() < 0.5 else "the words"
            text += f" and {sign} saying {_quote(list(meta['words']), rng)}"
        return text
    if kind == "chart":
        chart = meta.get("chart") or {}
        title = str(chart.get("title", "")).lower()
        return f"a {chart.get('type', 'bar')} chart" + (f" of {title}" if title else "")
    doc = meta.get("document") or {}
    title = str(doc.get("title", "")).lower()
    what = (
        "a table" if kind == "table" else str(pick(rng, ("a document", "a scanned form", "a page")))
    )
    return what + (f" titled {title}" if title else "")


def _partial(meta: Mapping[str, Any], rng: np.random.Generator) -> str:
    kind = meta.get("kind", "natural")
    obj = _main_object(meta)
    if kind == "scene_text" and meta.get("words") and rng.random() < 0.6:
        return _quote(list(meta["words"]), rng)  # only the text seen on the image
    if obj is not None and rng.random() < 0.5:
        return f"{obj['color']} {pick(rng, ('color', 'colour', 'design', 'art'))}"
    name = str(meta.get("class_name", ""))
    if kind in ("chart", "document", "table") and rng.random() < 0.5:
        title = str((meta.get("chart") or meta.get("document") or {}).get("title", "")).lower()
        if title:
            return title
    return name or str(pick(rng, _GENERIC))


def _fake_meta(cls: int, rng: np.random.Generator) -> dict[str, Any]:
    """Enough ground truth of an imagined image of class ``cls`` to caption it."""
    from webssl_cli.data.painter import COLOR_NAMES
    from webssl_cli.data.scenes import TITLES

    name = CLASS_NAMES[cls]
    kind = name if name in ("chart", "document", "table") else "natural"
    meta: dict[str, Any] = {"kind": kind, "class": cls, "class_name": name, "words": []}
    if kind == "natural":
        meta["objects"] = [{"shape": name, "color": str(pick(rng, COLOR_NAMES))}]
    elif kind == "chart":
        meta["chart"] = {
            "type": str(pick(rng, ("bar", "line", "pie"))),
            "title": str(pick(rng, TITLES)),
        }
    else:
        meta["document"] = {"title": str(pick(rng, TITLES))}
    return meta


def caption_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, CAPTION_STREAM])


def caption_of(members: Mapping[str, Any]) -> str | None:
    """The caption of a sample given its members by extension (``.txt``, ``.caption`` or the
    JSON's ``caption`` field); None when it has none."""
    for ext in ("txt", "caption"):
        raw = members.get(ext)
        if raw is not None:
            text = _text(raw)
            if text:
                return text
    raw = members.get("json")
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    cap = obj.get("caption") if isinstance(obj, dict) else None
    return " ".join(cap.split()) or None if isinstance(cap, str) else None


def _text(raw: Any) -> str | None:
    if isinstance(raw, str):
        s = raw
    else:
        try:
            s = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return " ".join(s.split()) or None
