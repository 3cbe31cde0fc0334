"""Zero-shot classification and image-text retrieval of a CLIP cell, with the random-init twin.

Both use the cell's two towers: the vision tower (``train/teacher_backbone.pt``, the same file
kNN and linear read) through its projection, and the text tower, tokenizer and projection of
``train/text_tower.pt``. Embeddings are L2-normalised and compared by dot product (the logit
scale does not change a ranking). The random-init twin is the two-tower model as the trainer
initialises it (the cell's seed), untrained: the level a claim of learning is measured against.

Every validation image's outcome is written (1.0 hit, 0.0 miss), one benchmark per reported
number, so that the mean of a benchmark's outcomes is its score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webssl_cli.data.bpe import BPETokenizer
from webssl_cli.errors import UserError
from webssl_cli.eval.encoders.base import Encoder, spec_from_dict
from webssl_cli.eval.features import extract, is_val_key, load_labelled, resolve_source
from webssl_cli.outcomes import Outcome
from webssl_cli.rundir import CellDir
from webssl_cli.specs.evals import RetrievalEval, ZeroShotEval
from webssl_cli.train.text import CLIPModel, TextDims, TextTransformer

TEXT_EXPORT = "text_tower.pt"


@dataclass
class TextSide:
    """What turns captions into joint embeddings, and images' CLS tokens too."""

    tokenizer: BPETokenizer
    text: TextTransformer
    visual_projection: nn.Linear

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch: int = 256) -> Tensor:
        out = []
        for i in range(0, len(texts), batch):
            tokens, ends = self.tokenizer.batch(list(texts[i : i + batch]),
                                                self.text.dims.context_length)  # fmt: skip
            out.append(F.normalize(self.text(tokens, ends).float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.text.dims.embed_dim)

    @torch.no_grad()
    def embed_cls(self, cls: Tensor) -> Tensor:
        return F.normalize(self.visual_projection(cls.float()), dim=-1)


def load_text_side(path: Path) -> TextSide:
    """The text side of ``train/text_tower.pt`` (on the CPU, frozen)."""
    if not path.is_file():
        raise UserError(
            f"{path}: missing; zero-shot and retrieval evaluate CLIP cells, whose train stage "
            "writes the text tower beside the vision tower (method: clip)"
        )
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        dims = TextDims(**ck["dims"])
        state = ck["state_dict"]
        tokenizer = BPETokenizer.from_json(ck["tokenizer"], str(path))
    except (KeyError, TypeError, RuntimeError, OSError) as exc:
        raise UserError(f"{path}: not a webssl CLIP text tower ({exc}); retrain the cell") from None
    text = TextTransformer(dims)
    text.load_state_dict(
        {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    )
    proj = nn.Linear(state["visual_projection.weight"].shape[1], dims.embed_dim, bias=False)
    proj.load_state_dict({"weight": state["visual_projection.weight"]})
    return TextSide(tokenizer, text.eval().requires_grad_(False), proj.requires_grad_(False))


def random_twin(spec: dict[str, Any], cell: CellDir, side: TextSide) -> tuple[Encoder, TextSide]:
    """Both towers as the trainer builds them for this cell, untrained."""
    from webssl_cli.specs.train import TrainConfig

    ck = torch.load(cell.backbone_export, map_location="cpu", weights_only=True)
    mspec = spec_from_dict(ck["spec"])
    tcfg = TrainConfig.model_validate(spec.get("train") or {})
    torch.manual_seed(int(spec.get("seed", tcfg.seed)))  # as the CLIP objective seeds
    model = CLIPModel(mspec, side.text.dims, tcfg.clip.init_logit_scale,
                      layerscale=tcfg.layerscale, drop_path=tcfg.drop_path)  # fmt: skip
    enc = Encoder(model.backbone, name=f"{mspec.name}-random-init", width=mspec.width,
                  patch=mspec.patch, img_size=mspec.img_size)  # fmt: skip
    twin = TextSide(side.tokenizer, model.text.eval().requires_grad_(False),
                    model.visual_projection.requires_grad_(False))  # fmt: skip
    return enc, twin


def image_embeddings(encoder: Encoder, side: TextSide, images: Sequence[bytes], size: int,
                     batch: int) -> Tensor:  # fmt: skip
    feats = extract(encoder, images, size, n_blocks=1, batch_size=batch)
    return side.embed_cls(feats.cls[:, -1])


def zero_shot_hits(img: Tensor, class_emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(top-1 hit, top-5 hit) per image, as float64 tensors."""
    scores = img @ class_emb.t()
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    return (top[:, 0] == labels).double(), (top == labels[:, None]).any(1).double()


def retrieval_hits(img: Tensor, txt: Tensor, captions: Sequence[str]) -> dict[str, Tensor]:
    """Per query: image->text and text->image hits at 1 and 5 (identical captions count as the
    same caption)."""
    ids: dict[str, int] = {}
    cap_id = torch.tensor([ids.setdefault(c, len(ids)) for c in captions])
    sims = img @ txt.t()
    k = min(5, sims.shape[1])
    i2t = cap_id[sims.topk(k, dim=1).indices] == cap_id[:, None]  # (N, k)
    t2i = cap_id[sims.t().topk(k, dim=1).indices] == cap_id[:, None]
    return {"i2t-r1": i2t[:, 0].double(), "i2t-r5": i2t.any(1).double(),
            "t2i-r1": t2i[:, 0].double(), "t2i-r5": t2i.any(1).double()}  # fmt: skip


def load_captioned(source: str, max_images: int | None) -> tuple[list[str], list[bytes], list[str]]:
    """(keys, images, captions) of the validation samples of ``source`` that have a caption."""
    from webssl_cli.data.captions import caption_of
    from webssl_cli.data.shards import iter_shards, list_shards

    keys, images, captions, n = [], [], [], 0
    for s in iter_shards(list_shards(source)):
        if s.image_bytes is None:
            continue
        n += 1
        cap = caption_of(s.members)
        if cap is not None and is_val_key(s.key):
            keys.append(s.key)
            images.append(s.image_bytes)
            captions.append(cap)
        if max_images is not None and n >= max_images:
            break
    if len(keys) < 2:
        raise UserError(
            f"{source}: {len(keys)} validation samples with a caption; retrieval needs at least 2 "
            "(captions in .txt, .caption or a JSON 'caption' field)"
        )
    return keys, images, captions


def run_clip_eval(cfg: ZeroShotEval | RetrievalEval, spec: dict[str, Any], encoder: Encoder,
                  size: int, cell: CellDir) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, float], list[Outcome]]:  # fmt: skip
    """Result rows, details, timings and per-example outcomes of a zero-shot or retrieval eval."""
    import time

    if cfg.encoder is not None:
        raise UserError(
            f"evals: {cfg.stage_name}: encoder is set; zero-shot and retrieval evaluate the "
            "cell's own two towers (a released vision tower has no text tower here)"
        )
    side = load_text_side(cell.train_dir / TEXT_EXPORT)
    source = resolve_source(cfg.dataset, spec)
    t = time.time()
    if isinstance(cfg, ZeroShotEval):
        _, val = load_labelled(source, cfg.max_images)
        keys, images = list(val.keys), val.images
        labels = torch.tensor(val.labels)
        names = [val.class_names.get(i, str(i)) for i in range(max(val.class_names) + 1)]
    else:
        keys, images, captions = load_captioned(source, cfg.max_images)
    variants: list[tuple[str, Encoder, TextSide]] = [("encoder", encoder, side)]
    if "random-init" in cfg.baselines:
        twin_enc, twin_side = random_twin(spec, cell, side)
        variants.append(("random-init", twin_enc.to(encoder.device), twin_side))
    rows: list[dict[str, Any]] = []
    outcomes: list[Outcome] = []
    details: dict[str, Any] = {"n_val": len(keys)}
    for variant, enc, s in variants:
        img = image_embeddings(enc, s, images, size, cfg.batch_size).cpu()
        if isinstance(cfg, ZeroShotEval):
            class_emb = torch.stack([
                F.normalize(s.embed_texts([p.format(label=n) for p in cfg.prompts]).mean(0), dim=0)
                for n in names
            ])  # fmt: skip
            top1, top5 = zero_shot_hits(img, class_emb, labels)
            hits = {"": (top1, "top1"), "-top5": (top5, "top5")}
            details["n_classes"] = len(names)
            details["chance_top1"] = float(torch.bincount(labels).max()) / len(labels)
        else:
            per = retrieval_hits(img, s.embed_texts(captions), captions)
            hits = {f"-{k}": (v, "recall@" + k[-1]) for k, v in per.items()}
            details["distinct_captions"] = len(set(captions))
        for suffix, (h, metric) in hits.items():
            bench = f"{cfg.dataset}{suffix}"
            row = {"benchmark": bench, "category": None, "metric": metric, "value": float(h.mean())}
            rows.append(row if variant == "encoder" else {**row, "variant": variant})
            outcomes += [Outcome(variant, bench, k, float(v)) for k, v in zip(keys, h.tolist(), strict=True)]  # fmt: skip
    return rows, details, {"eval_s": time.time() - t}, outcomes
