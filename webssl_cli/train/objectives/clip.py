"""CLIP as an ``Objective``: the registry ViT and a causal text transformer trained with the
symmetric contrastive loss over image-caption pairs (OpenCLIP / MetaCLIP).

- One view per image (the rank's global crops, first view), one caption per image from the
  sample (``Batch.captions``), tokenised by the source's byte-level BPE (``data.bpe``),
  learnt from the training captions and kept in the run directory (``train/tokenizer.json``)
  so a resumed run reads the same vocabulary.
- Negatives are every pair of the global batch: features are gathered from all ranks with
  gradients flowing through the gather (``gather_with_grad``) and each rank computes the
  loss over the whole batch (OpenCLIP's ``local_loss`` off), so 2 ranks of B images equal 1
  rank of 2B. With gradient accumulation the negatives are those of the micro-batch.
- Images without a caption stay in the batch but are left out of the loss (counted by the
  loader as ``no_caption``).
- The learnt log logit scale starts at ``init_logit_scale`` and is clamped to
  [0, ``max_logit_scale``] after every step, as OpenCLIP clamps it.
- Export: the vision tower in the teacher_backbone.pt format (kNN, linear and VQA evaluate it
  as they do a Web-DINO teacher) and, beside it, ``train/text_tower.pt`` (text tower, visual
  projection, logit scale, tokenizer) for zero-shot classification and retrieval.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from webssl_cli import device as dev
from webssl_cli.data.bpe import BPETokenizer, tokenizer_for
from webssl_cli.errors import UserError
from webssl_cli.rundir import atomic_write_bytes
from webssl_cli.specs.registry import ModelSpec
from webssl_cli.specs.train import TrainConfig
from webssl_cli.train import losses as L
from webssl_cli.train.batches import Batch, to_model_input
from webssl_cli.train.distributed import barrier, gather_rows, no_sync, wrap
from webssl_cli.train.objective import RunContext
from webssl_cli.train.optim import param_groups
from webssl_cli.train.text import CLIPModel, TextDims, text_dims

TEXT_EXPORT = "text_tower.pt"
TOKENIZER = "tokenizer.json"
TEXT_FORMAT = "webssl-clip-text-1"


@dataclass
class ClipInputs:
    images: Tensor  # (mb, 3, G, G)
    tokens: Tensor  # (mb, context_length) int64
    ends: Tensor  # (mb,) index of the end token
    valid: Tensor  # (mb,) bool: the image has a caption


class _Towers(nn.Module):
    """The root a data-parallel wrapper sees: one forward through both towers."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: Tensor, tokens: Tensor, ends: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.model(images, tokens, ends)  # type: ignore[no-any-return]


def load_tokenizer(ctx: RunContext, vocab_size: int) -> BPETokenizer:
    """The run's tokenizer: the run directory's copy when resuming, else the source's (built
    from its captions on first use by rank 0) copied into the run directory."""
    if ctx.run_dir is None:
        return tokenizer_for(list(ctx.shards), vocab_size)[0]
    path = Path(ctx.run_dir) / "train" / TOKENIZER
    if not path.exists() and ctx.rank == 0:
        tok, _ = tokenizer_for(list(ctx.shards), vocab_size, fallback_dir=path.parent)
        tok.save(path)
    barrier()
    return BPETokenizer.load(path)


class CLIP:
    """The CLIP recipe behind the ``Objective`` interface (see ``train.objective``)."""

    def __init__(self, spec: ModelSpec, cfg: TrainConfig, ctx: RunContext) -> None:
        self.spec, self.cfg, self.ctx = spec, cfg, ctx
        if not ctx.shards and ctx.run_dir is None:
            raise UserError("CLIP needs the training shards to build its caption tokenizer")
        self.tokenizer = load_tokenizer(ctx, cfg.clip.vocab_size)
        self.dims = text_dims(cfg.clip, spec.width, self.tokenizer.vocab_size)
        torch.manual_seed(ctx.seed)  # every rank builds the same initial weights
        self.model = CLIPModel(spec, self.dims, cfg.clip.init_logit_scale,
                               layerscale=cfg.layerscale, drop_path=cfg.drop_path).to(ctx.device)  # fmt: skip
        self.model.train()
        self.model.backbone.grad_checkpointing = bool(cfg.dist.activation_checkpointing)
        units = [*self.model.backbone.blocks, *self.model.text.blocks]
        self.step_module = wrap(
            _Towers(self.model), units, ctx.strategy, ctx.device, trainable=True
        )
        self._step_metrics: dict[str, float] = {}

    # ---- optimisation -----------------------------------------------------------------------
    def trainable(self) -> nn.Module:
        return self.model

    def param_groups(self) -> list[dict[str, Any]]:
        """The shared groups (layer-wise lr over the vision tower), with every parameter of
        fewer than 2 dimensions undecayed (OpenCLIP: gains, biases, the logit scale)."""
        out: list[dict[str, Any]] = []
        for g in param_groups(self.model, self.cfg, self.model.backbone.n_blocks):
            flat = [p for p in g["params"] if p.ndim < 2] if g["wd_mult"] else []
            rest = [p for p in g["params"] if not any(p is q for q in flat)]
            if rest:
                out.append({**g, "params": rest})
            if flat:
                out.append({**g, "params": flat, "wd_mult": 0.0})
        return out

    def clip_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        return [("grad_norm", [p for p in self.model.parameters() if p.requires_grad])]

    def no_sync(self, last: bool) -> AbstractContextManager[Any]:
        return no_sync(self.step_module, last)

    # ---- one step ------------------------------------------------------------------------------
    def step_inputs(self, batch: Batch, it: int) -> list[ClipInputs]:
        ctx, mb = self.ctx, self.ctx.micro
        views = batch.globals_u8[0]  # (B_rank, G, G, 3): one view per image
        if len(batch.captions) != views.shape[0]:
            raise ValueError(f"{len(batch.captions)} captions for {views.shape[0]} images")
        tokens, ends = self.tokenizer.batch(batch.captions, self.dims.context_length)
        valid = torch.tensor([c is not None for c in batch.captions])
        out = []
        for j in range(ctx.accum):
            sl = slice(j * mb, (j + 1) * mb)
            out.append(ClipInputs(to_model_input(views[sl], ctx.device), tokens[sl].to(ctx.device),
                                  ends[sl].to(ctx.device), valid[sl].to(ctx.device)))  # fmt: skip
        return out

    def loss(self, inputs: ClipInputs, it: int) -> tuple[Tensor, dict[str, Tensor]]:
        x, with_grad = inputs, self.cfg.clip.gather_with_grad
        with dev.autocast(self.ctx.device, self.ctx.amp):
            img, txt, scale = self.step_module(x.images, x.tokens, x.ends)
        img_all, txt_all = gather_rows(img.float(), with_grad), gather_rows(txt.float(), with_grad)
        valid = gather_rows(x.valid, with_grad=False)
        loss = L.clip_loss(img_all, txt_all, scale.float(), valid)
        with torch.no_grad():
            logits = img_all @ txt_all.t()
            hit = (logits.argmax(1) == torch.arange(len(logits), device=logits.device)).float()
            n_valid = valid.float().sum().clamp(min=1)
            acc = (hit * valid.float()).sum() / n_valid
        return loss, {"logit_scale": scale.detach().float(), "i2t_top1": acc,
                      "captioned": valid.float().mean()}  # fmt: skip

    def after_step(self, it: int) -> dict[str, float]:
        with torch.no_grad():  # OpenCLIP clamps the log scale to [0, log 100] after each step
            self.model.logit_scale.clamp_(0.0, self.cfg.clip.max_logit_scale)
        return dict(self._step_metrics)

    # ---- checkpoints and export -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": get_model_state_dict(self.model)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        set_model_state_dict(self.model, state["model"])

    def export_backbone(self) -> dict[str, Tensor]:
        full = get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if self.ctx.rank == 0 and self.ctx.run_dir is not None:
            write_text_tower(Path(self.ctx.run_dir) / "train" / TEXT_EXPORT, self.spec,
                             self.dims, self.tokenizer, full)  # fmt: skip
        return {
            k.removeprefix("backbone."): v
            for k, v in full.items()
            if k.startswith("backbone.") and isinstance(v, Tensor)
        }


def write_text_tower(path: Path, spec: ModelSpec, dims: TextDims, tokenizer: BPETokenizer,
                     full: Mapping[str, Any]) -> None:  # fmt: skip
    """``train/text_tower.pt``: what zero-shot and retrieval need beside the vision tower."""
    state = {
        k: v.detach().cpu()
        for k, v in full.items()
        if isinstance(v, Tensor) and not k.startswith("backbone.")
    }
    buf = io.BytesIO()
    torch.save({"format": TEXT_FORMAT, "model": spec.name, "dims": dataclasses.asdict(dims),
                "tokenizer": tokenizer.to_json(), "state_dict": state}, buf)  # fmt: skip
    atomic_write_bytes(path, buf.getvalue())
