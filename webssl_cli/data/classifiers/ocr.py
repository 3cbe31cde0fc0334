"""The offline text-detector classifier: PP-OCRv4 detection from rapidocr-onnxruntime, on CPU.

Only the detector runs (recognition costs ~14x more, FACTS.md), on the image downscaled so its
long side is at most 480 px (never upscaled: the library's default 736 px minimum makes small
images slow and separates worse). What the detector returns is turned into features:

- light (any readable text): the number of confident text boxes of a readable size;
- heavy (charts, tables, documents with text): text boxes that line up in rows and columns
  (tables, forms, tick labels, legends), their count and area, plus straight horizontal and
  vertical rules found with OpenCV (axes, grid lines, table borders).

Scores are monotone in the evidence and thresholds are fixed constants chosen on a synthetic
corpus of one seed and measured on another (benchmarks/filter_accuracy.py). They need re-tuning
on real web images.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from webssl_cli.data.classifiers.base import VERSIONS

VERSION = VERSIONS["ocr"]
MAX_SIDE = 480
BOX_SCORE = 0.4  # detector confidence a box needs to count as text
MIN_BOX_H = 5  # px at the detector's scale: smaller marks are not readable text
# A line of text is elongated; a big near-square blob (a ring, a cross, a logo) that the
# detector takes for one giant glyph is not readable text unless it is small like a digit.
MIN_ASPECT = 1.4
MAX_SQUARE_SIDE = 0.12  # of the image's short side...
MAX_SQUARE_PX = 24  # ...and in pixels at the detector's scale (a digit, not a ring's hole)
# A text line is at most this thick (of the short side); thicker "lines" are groups of shapes.
MAX_THICKNESS = 0.3
LIGHT_MIN_BOXES = 1
HEAVY_THRESHOLD = 0.5


@dataclass
class Detection:
    """Text boxes of one image at the detector's scale: (N, 4, 2) quads and (N,) scores."""

    boxes: np.ndarray
    scores: np.ndarray
    shape: tuple[int, int]  # (H, W) the detector saw


class TextDetector:
    """A thin wrapper over rapidocr's PP-OCRv4 detector with our own resizing and thread count."""

    _lock = threading.Lock()

    def __init__(self, threads: int = 1) -> None:
        import yaml
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector as _Det
        from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH, root_dir

        with open(DEFAULT_CFG_PATH, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)["Det"]
        cfg["model_path"] = str(root_dir / cfg["model_path"])
        cfg["intra_op_num_threads"] = threads
        cfg["inter_op_num_threads"] = 1
        cfg["limit_type"] = "max"
        cfg["limit_side_len"] = MAX_SIDE
        self._det = _Det(cfg)
        self._det.postprocess_op.box_thresh = 0.3  # weaker boxes are kept here; BOX_SCORE decides
        self._mean = np.array(cfg["mean"], np.float32)
        self._std = np.array(cfg["std"], np.float32)

    def __call__(self, rgb: np.ndarray) -> Detection:
        h, w = rgb.shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        # The network needs sides that are multiples of 32; round, never below 32.
        nh, nw = (
            max(32, int(round(h * scale / 32)) * 32),
            max(32, int(round(w * scale / 32)) * 32),
        )
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # PP-OCR models are trained on BGR input
        img = cv2.resize(
            bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        )
        x = (img.astype(np.float32) / 255.0 - self._mean) / self._std
        x = x.transpose(2, 0, 1)[None]  # (1, 3, H, W)
        pred = self._det.infer(x)[0]
        boxes, scores = self._det.postprocess_op(pred, (nh, nw))
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4, 2)
        scores = np.asarray(scores, np.float32).reshape(-1)
        return Detection(boxes, scores, (nh, nw))


# ---- features -----------------------------------------------------------------------------------
def _box_geometry(boxes: np.ndarray) -> np.ndarray:
    """(N, 6): x0, y0, x1, y1 of the axis-aligned hull, then long side and short side."""
    if len(boxes) == 0:
        return np.zeros((0, 6), np.float32)
    x0, y0 = boxes[:, :, 0].min(1), boxes[:, :, 1].min(1)
    x1, y1 = boxes[:, :, 0].max(1), boxes[:, :, 1].max(1)
    e1 = np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1)
    e2 = np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1)
    return np.stack([x0, y0, x1, y1, np.maximum(e1, e2), np.minimum(e1, e2)], 1)


def _aligned(values: np.ndarray, tol: float) -> np.ndarray:
    """For each value, how many other values lie within ``tol`` of it."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    d = np.abs(values[:, None] - values[None, :])
    return (d <= tol).sum(1) - 1


def rule_lines(rgb: np.ndarray, shape: tuple[int, int]) -> tuple[int, int]:
    """Long straight horizontal and vertical strokes (axes, grids, table rules, underlines)."""
    gray = cv2.cvtColor(
        cv2.resize(rgb, (shape[1], shape[0]), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
    )
    # Dark-on-light and light-on-dark strokes both count: a black-hat/top-hat keeps thin strokes.
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5))
    thin = cv2.max(
        cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, k), cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, k)
    )
    _, bw = cv2.threshold(thin, 40, 255, cv2.THRESH_BINARY)
    h, w = bw.shape
    counts = []
    for kernel in ((max(8, w // 3), 1), (1, max(8, h // 3))):
        lines = cv2.morphologyEx(
            bw, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, kernel)
        )
        n, _ = cv2.connectedComponents(lines)
        counts.append(n - 1)
    return counts[0], counts[1]


def features(det: Detection, rgb: np.ndarray | None = None) -> dict[str, float]:
    """Layout features from one detection (and the image, for rule lines)."""
    keep = det.scores >= BOX_SCORE
    geo = _box_geometry(det.boxes[keep])
    h, w = det.shape
    if len(geo):
        long_side, short_side = geo[:, 4], geo[:, 5]
        digit = short_side <= min(MAX_SQUARE_SIDE * min(h, w), MAX_SQUARE_PX)
        textlike = (long_side >= MIN_ASPECT * short_side) | digit
        thick_ok = (short_side >= MIN_BOX_H) & (short_side <= MAX_THICKNESS * min(h, w))
        geo = geo[textlike & thick_ok]
    n = len(geo)
    feats: dict[str, float] = {"boxes": float(n)}
    if n == 0:
        feats.update(area=0.0, rows=0.0, cols=0.0, small=0.0, hlines=0.0, vlines=0.0)
    else:
        hgt = geo[:, 5]
        med = float(np.median(hgt))
        cy = (geo[:, 1] + geo[:, 3]) / 2
        tol = max(2.0, 0.35 * med)
        # Boxes that share a baseline with another (table rows, axis labels, legend entries)...
        # Typeset text (pages, charts, tables) comes in one or two sizes; signs vary. Only
        # boxes near the median height count towards alignment.
        uniform = np.abs(hgt - med) <= 0.2 * med
        rows = (_aligned(cy, tol) >= 1) & uniform
        # ...or a left edge / centre with two others (paragraphs, form fields, columns).
        left = _aligned(geo[:, 0], tol) >= 2
        cx = (geo[:, 0] + geo[:, 2]) / 2
        centre = _aligned(cx, tol) >= 2
        area = float(((geo[:, 2] - geo[:, 0]) * (geo[:, 3] - geo[:, 1])).sum() / (h * w))
        feats.update(
            area=area,
            rows=float(rows.sum()),
            cols=float(((left | centre) & uniform).sum()),
            # Document and chart text is small and uniform; signs are big and varied.
            small=float((hgt <= 0.07 * min(h, w)).sum()),
        )
        feats["hlines"], feats["vlines"] = (0.0, 0.0)
    if rgb is not None and n > 0:
        hl, vl = rule_lines(rgb, det.shape)
        feats["hlines"], feats["vlines"] = float(hl), float(vl)
    return feats


def light_score(f: dict[str, float]) -> float:
    return f["boxes"]


def heavy_score(f: dict[str, float]) -> float:
    """A score in [0, 1]: structured text (many aligned small boxes) or text with rules/axes."""
    if f["boxes"] == 0:
        return 0.0
    # Three or more aligned boxes of one size are the strongest cue (rows of a table, lines
    # of a page, tick labels, a legend); rules and axes and many small boxes add to it.
    evidence = 0.25 * max(f["rows"], f["cols"]) + 0.1 * min(f["rows"], f["cols"])
    evidence += 0.08 * f["small"] + 0.25 * min(2.0, f["hlines"] + f["vlines"])
    evidence += 0.05 * max(0.0, f["boxes"] - 4)
    return float(min(1.0, evidence / 1.6))


class OcrClassifier:
    """light: any text box; heavy: chart/table/document layout from the detector's boxes."""

    name = "ocr"
    version = VERSION

    def __init__(self, threads: int = 1) -> None:
        self._detector = TextDetector(threads=threads)

    def classify(
        self, images: list[np.ndarray], metas: list[dict[str, Any]], filter: str
    ) -> list[tuple[float, bool]]:
        out = []
        for rgb in images:
            f = features(self._detector(rgb), rgb if filter == "heavy" else None)
            if filter == "light":
                s = light_score(f)
                out.append((s, s >= LIGHT_MIN_BOXES))
            else:
                s = heavy_score(f)
                out.append((s, s >= HEAVY_THRESHOLD))
        return out
