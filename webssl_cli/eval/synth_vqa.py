"""A synthetic VQA suite built from the synthetic corpus' ground truth (``data.synth`` JSON):
twelve benchmarks, three per category of the paper, with training conversations for both
stages (LLaVA format: stage 1 captions, stage 2 question/answer pairs) from a disjoint split.

| benchmark | category | question | metric (as its real analogue) |
|---|---|---|---|
| synth-kind | General | what kind of image (photo, sign, chart, document, table) | VQA accuracy |
| synth-object | General | the main object's shape (natural images) | VQA accuracy (GQA) |
| synth-text | General | is there any text? | yes/no (MME) |
| synth-chart-max | Knowledge | which label has the largest value? (options) | multiple choice (AI2D) |
| synth-chart-type | Knowledge | bar, line or pie? (options) | multiple choice |
| synth-object-mc | Knowledge | which shape is in the image? (options) | multiple choice (ScienceQA) |
| synth-word | OCR & Chart | a word written in the image | VQA accuracy (TextVQA) |
| synth-chart-value | OCR & Chart | a bar's / slice's value | relaxed accuracy (ChartQA) |
| synth-doc-field | OCR & Chart | a form field's or table row's value | ANLS (DocVQA) |
| synth-color | Vision-Centric | the colour of a named shape (the large one first) | VQA accuracy |
| synth-count | Vision-Centric | how many shapes | VQA accuracy (CV-Bench count) |
| synth-position | Vision-Centric | is shape a left or right of shape b? | VQA accuracy (CV-Bench relation) |

Colour and position ask up to ``questions_per_image`` questions per image (distinct shapes,
pairs of distinct shapes at least 10% of the width apart), so that each has a few hundred test
questions from a corpus of ~1,500 images. What an encoder can help with at the CPU studies'
48 px (6x6 patches): image kind, text present or not, chart type, the large shape's class and
colour; count and position of 8-12 px shapes are at the limit; reading words, values and
fields (OCR & Chart, chart-max) is impossible at that size: those stay at chance by design.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from typing import Any

from webssl_cli.data.painter import SHAPES  # the corpus' own shape classes
from webssl_cli.errors import UserError
from webssl_cli.eval import metrics as M
from webssl_cli.eval.benchmarks import Question, from_conversations, score
from webssl_cli.specs.evals import VqaEval

Example = tuple[str, str, str]  # (image key, prompt, answer)

BENCHMARKS: dict[str, str] = {
    "synth-kind": "General",
    "synth-object": "General",
    "synth-text": "General",
    "synth-chart-max": "Knowledge",
    "synth-chart-type": "Knowledge",
    "synth-object-mc": "Knowledge",
    "synth-word": "OCR & Chart",
    "synth-chart-value": "OCR & Chart",
    "synth-doc-field": "OCR & Chart",
    "synth-color": "Vision-Centric",
    "synth-count": "Vision-Centric",
    "synth-position": "Vision-Centric",
}
KIND_WORD = {
    "natural": "photo",
    "scene_text": "sign",
    "chart": "chart",
    "document": "document",
    "table": "table",
}


def _rng(key: str, bench: str) -> random.Random:
    return random.Random(zlib.crc32(f"{key}/{bench}".encode()))


def _q(
    meta: dict[str, Any],
    bench: str,
    question: str,
    answers: list[str],
    metric: str,
    choices: list[str] | None = None,
    n: int = 0,
) -> Question:
    key = str(meta["key"])
    qid = f"{bench}/{key}" if n == 0 else f"{bench}/{key}/{n}"  # stable across cells
    return Question(qid, bench, BENCHMARKS[bench], key, question, answers, metric, choices)


def questions_for(meta: dict[str, Any], per_image: int = 1) -> list[Question]:
    """Every question the ground truth of one image supports: one per benchmark, up to
    ``per_image`` for colour (distinct shapes) and position (pairs of distinct shapes)."""
    key, kind = str(meta["key"]), meta.get("kind", "natural")
    objects = meta.get("objects") or []
    chart, doc = meta.get("chart"), meta.get("document")
    out = [
        _q(
            meta,
            "synth-kind",
            "What kind of image is this?",
            [KIND_WORD.get(kind, kind)],
            "vqa_accuracy",
        ),
        _q(
            meta,
            "synth-text",
            "Is there any text in the image?",
            ["yes" if meta.get("has_text") else "no"],
            "yesno",
        ),
    ]
    if kind in ("natural", "scene_text") and objects:
        main = objects[-1]  # the class object is drawn last, on top
        out.append(
            _q(
                meta,
                "synth-object",
                "What is the large shape in the image?",
                [main["shape"]],
                "vqa_accuracy",
            )
        )
        r = _rng(key, "synth-object-mc")
        present = {o["shape"] for o in objects}
        absent = [s for s in SHAPES if s not in present]
        choices = [main["shape"], *r.sample(absent, min(3, len(absent)))]
        r.shuffle(choices)
        letter = M.LETTERS[choices.index(main["shape"])]
        out.append(
            _q(
                meta,
                "synth-object-mc",
                "Which of these shapes is in the image?",
                [letter],
                "mc",
                choices,
            )
        )
        shapes = Counter(o["shape"] for o in objects)
        unique = [o for o in objects if shapes[o["shape"]] == 1]
        # the large shape first (when its shape is unique): the one a 48 px encoder resolves
        rest = [o for o in unique if o is not main]
        picked = ([main] if main in unique else []) + _rng(key, "synth-color").sample(
            rest, len(rest)
        )
        for j, o in enumerate(picked[:per_image]):
            out.append(
                _q(
                    meta,
                    "synth-color",
                    f"What color is the {o['shape']}?",
                    [o["color"]],
                    "vqa_accuracy",
                    n=j,
                )
            )
        out.append(
            _q(
                meta,
                "synth-count",
                "How many shapes are there?",
                [str(len(objects))],
                "vqa_accuracy",
            )
        )
        pairs = [(a, b) for a in unique for b in unique if a is not b]
        r = _rng(key, "synth-position")
        asked = 0
        for a, b in r.sample(pairs, len(pairs)):
            ax, bx = (a["bbox"][0] + a["bbox"][2]) / 2, (b["bbox"][0] + b["bbox"][2]) / 2
            if asked < per_image and abs(ax - bx) >= 0.1 * float(meta.get("width", 64)):
                side = "left" if ax < bx else "right"
                q = f"Is the {a['shape']} to the left or to the right of the {b['shape']}?"
                out.append(_q(meta, "synth-position", q, [side], "vqa_accuracy", n=asked))
                asked += 1
    words = [w for w in meta.get("words") or [] if w.isalpha()]
    if kind == "scene_text" and words:
        out.append(
            _q(
                meta,
                "synth-word",
                "What word is written in the image?",
                [w.lower() for w in words],
                "exact",
            )
        )
    if chart and chart.get("labels"):
        labels, values = list(chart["labels"]), list(chart["values"])
        r = _rng(key, "synth-chart-value")
        i = r.randrange(len(labels))
        out.append(
            _q(
                meta,
                "synth-chart-value",
                f"What is the value of {labels[i]}?",
                [str(values[i])],
                "relaxed",
            )
        )
        if values.count(max(values)) == 1:
            idx = sorted(
                r.sample(range(len(labels)), min(4, len(labels))) + [values.index(max(values))]
            )
            choices = [labels[j] for j in dict.fromkeys(idx)]
            top = labels[values.index(max(values))]
            q = "Which label has the largest value?"
            out.append(
                _q(meta, "synth-chart-max", q, [M.LETTERS[choices.index(top)]], "mc", choices)
            )
        types = ["bar", "line", "pie"]
        q = "What type of chart is this?"
        out.append(
            _q(meta, "synth-chart-type", q, [M.LETTERS[types.index(chart["type"])]], "mc", types)
        )
    if doc and doc.get("fields"):
        fields = sorted(doc["fields"].items())
        name, value = _rng(key, "synth-doc-field").choice(fields)
        q = (
            f"What is the first value in the row {name}?"
            if kind == "table"
            else f"What is the {name}?"
        )
        out.append(_q(meta, "synth-doc-field", q, [str(value)], "anls"))
    return out


def caption(meta: dict[str, Any]) -> str:
    """A short ground-truth description: the stage-1 (alignment) target."""
    kind = meta.get("kind", "natural")
    if meta.get("chart"):
        c = meta["chart"]
        return f"a {c['type']} chart titled {c['title']}".lower()
    if meta.get("document"):
        return f"a {KIND_WORD.get(kind, kind)} titled {meta['document']['title']}".lower()
    objs = meta.get("objects") or []
    parts = [f"{o['color']} {o['shape']}" for o in reversed(objs)]
    text = f"a {KIND_WORD.get(kind, kind)} of a " + " and a ".join(parts) if parts else f"a {kind}"
    words = [w.lower() for w in meta.get("words") or [] if w.isalpha()]
    if kind == "scene_text" and words:
        text += " with the word " + words[0]
    return text


def is_test(key: str, test_every: int) -> bool:
    return zlib.crc32(key.encode()) % test_every == 0


def build_suite(
    metas: list[dict[str, Any]],
    *,
    test_every: int = 5,
    max_questions: int | None = None,
    questions_per_image: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Question]]:
    """(stage-1 conversations, stage-2 conversations, test questions), split by image key.

    Conversations are LLaVA records: {"id", "image", "conversations": [{"from": "human",
    "value": "<image>\\n..."}, {"from": "gpt", "value": ...}]}. ``max_questions`` caps each
    benchmark's test questions (the first by id)."""
    stage1, stage2, test = [], [], []
    for meta in metas:
        key = str(meta["key"])
        qs = questions_for(meta, questions_per_image)
        if is_test(key, test_every):
            test.extend(qs)
            continue
        stage1.append(_conv(f"cap/{key}", key, "Describe the image briefly.", caption(meta)))
        for q in qs:
            stage2.append(_conv(q.id, key, q.prompt(), q.answers[0]))
    if max_questions is not None:
        per: dict[str, int] = Counter()
        kept = []
        for q in sorted(test, key=lambda q: q.id):
            if per[q.benchmark] < max_questions:
                per[q.benchmark] += 1
                kept.append(q)
        test = kept
    return stage1, stage2, test


def _conv(cid: str, image: str, question: str, answer: str) -> dict[str, Any]:
    return {
        "id": cid,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def majority_baseline(stage2: list[dict[str, Any]], test: list[Question]) -> dict[str, float]:
    """Per benchmark: the score of always giving the most common training answer (the
    'chance' a model reaches without looking at the image)."""
    common: dict[str, Counter[str]] = {}
    for c in stage2:
        bench = c["id"].split("/")[0]
        common.setdefault(bench, Counter())[c["conversations"][1]["value"]] += 1
    out: dict[str, list[float]] = {}
    for q in test:
        guess = common[q.benchmark].most_common(1)[0][0] if q.benchmark in common else ""
        out.setdefault(q.benchmark, []).append(score(q, guess))
    return {b: sum(v) / len(v) for b, v in out.items()}


def load_synthetic(
    cfg: VqaEval, spec: dict[str, Any]
) -> tuple[dict[str, bytes], list[Example], list[Example], list[Question], dict[str, float]]:
    """Images by key, stage-1 and stage-2 examples, test questions, majority baselines."""
    from webssl_cli.data.shards import iter_shards, list_shards
    from webssl_cli.eval.features import resolve_source

    if cfg.dataset is not None:
        source = resolve_source(cfg.dataset, spec)
    else:
        sources = spec.get("sources") or {}
        name = next((n for n in ("synth-vqa", "synth-labelled") if n in sources), None)
        source = (
            resolve_source(name, spec)
            if name
            else str((spec.get("data") or {}).get("shards") or "")
        )
        if not source:
            raise UserError(
                "cell.json: the vqa eval needs a dataset: set evals[].dataset or a 'synth-vqa' source"
            )
    images: dict[str, bytes] = {}
    metas = []
    for s in iter_shards(list_shards(source)):
        meta = s.meta()
        if "kind" not in meta or s.image_bytes is None:
            continue
        meta.setdefault("key", s.key)
        images[str(meta["key"])] = s.image_bytes
        metas.append(meta)
        if cfg.max_images is not None and len(metas) >= cfg.max_images:
            break
    if not metas:
        raise UserError(
            f"{source}: no samples with synthetic ground truth (JSON 'kind', 'objects', ...)"
        )
    stage1, stage2, test = build_suite(
        metas,
        test_every=cfg.test_every,
        max_questions=cfg.max_questions,
        questions_per_image=cfg.questions_per_image,
    )
    return (
        images,
        from_conversations(stage1),
        from_conversations(stage2),
        test,
        majority_baseline(stage2, test),
    )
