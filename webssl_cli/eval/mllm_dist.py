"""Stage 2 of the MLLM (adapter + language model trained on conversations) spread over the
job's ranks, with the launcher the trainer uses (``train.distributed``: env:// rendezvous from
torchrun / SLURM / submitit variables, NCCL on CUDA, gloo on CPU).

- 'fsdp': FSDP2 ``fully_shard`` on each decoder layer of the LM, then on the root (adapter,
  embeddings, final norm, LM head); bf16 compute with fp32 reductions on CUDA. An 8B LM's
  parameters, gradients and AdamW state (16 bytes a parameter, ~128 GB) are split over the
  ranks. 'ddp': replicated, gradients all-reduced. 'single': one process, no wrapping.
- Activation checkpointing recomputes each decoder layer in backward (transformers' own
  non-reentrant checkpointing, which FSDP2 supports).
- The global batch is the same at every world size: the ranks take interleaved slices of the
  one data order, and each rank's summed token loss is divided by the batch's total count of
  assistant tokens (all-reduced), so the gradient is the single-process gradient whatever the
  split or the padding.
- Checkpoints (``torch.distributed.checkpoint``: every rank writes its shards) every
  ``checkpoint_every`` steps; ``latest.json`` names the last complete one and the losses so
  far. A killed run resumes from it, replaying the data order to the step.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from webssl_cli import device as dev
from webssl_cli.eval.chat import Conversation, collate, embed, encode, image_rows
from webssl_cli.eval.mllm import MLLM
from webssl_cli.rundir import atomic_write_json
from webssl_cli.train import distributed as D

STRATEGIES = ("single", "ddp", "fsdp")


class Stage2Net(nn.Module):
    """The module the strategy wraps: token ids and patches in, summed token loss out, in one
    forward (FSDP2 and DDP synchronise through the root's forward)."""

    def __init__(self, model: MLLM) -> None:
        super().__init__()
        self.adapter = model.adapter
        self.lm = model.lm
        self.tokens = model.tokens

    def forward(
        self, ids: Tensor, mask: Tensor, labels: Tensor, is_img: Tensor, feats: Tensor | None
    ) -> Tensor:
        emb = embed(self.adapter, self.lm, self.tokens, ids, is_img, feats)
        logits = self.lm(inputs_embeds=emb, attention_mask=mask).logits
        loss = nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            labels[:, 1:].flatten(),
            ignore_index=-100,
            reduction="sum",
        )
        if feats is None:  # every parameter takes part in every step (DDP requires it)
            loss = loss + 0.0 * sum(p.sum() for p in self.adapter.parameters())
        return loss


def decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The decoder blocks of a transformers causal LM (Llama, Mistral, Qwen: ``model.layers``)."""
    inner = getattr(lm, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(lm).__name__}: no model.layers to shard")
    return list(layers)


def wrap_stage2(
    model: MLLM, strategy: str, device: torch.device, activation_checkpointing: bool
) -> nn.Module:
    """``model``'s stage-2 root spread over the default group (call before the optimiser)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown stage-2 strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if activation_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model.lm, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            model.lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    root = Stage2Net(model)
    if strategy == "single":
        if D.world() > 1:
            raise ValueError("stage-2 strategy 'single' with several ranks; use ddp or fsdp")
        return root
    units = decoder_layers(model.lm) if strategy == "fsdp" else []
    return D.wrap(root, units, strategy, device, trainable=True)


def _order(n: int, batch: int, steps: int, seed: int) -> list[list[int]]:
    """The global batches of every step: reshuffled epochs, as ``mllm.train_stage`` draws them."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    out = []
    for _ in range(steps):
        if len(order) < batch:
            order += torch.randperm(n, generator=gen).tolist()
        out.append(order[:batch])
        order = order[batch:]
    return out


def _lr_scale(step: int, steps: int) -> float:
    warm = max(1, round(0.03 * steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def _save(
    ckpt: Path, root: nn.Module, opt: torch.optim.Optimizer, step: int, losses: list[float]
) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(root, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(ckpt / f"step-{step}"))
    D.barrier()
    if _rank() == 0:
        previous = _latest(ckpt)
        atomic_write_json(ckpt / "latest.json", {"step": step, "losses": losses})
        if previous is not None and previous["step"] != step:
            shutil.rmtree(ckpt / f"step-{previous['step']}", ignore_errors=True)
    D.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _latest(ckpt: Path) -> dict[str, Any] | None:
    path = ckpt / "latest.json"
    return dict(json.loads(path.read_text())) if path.exists() else None


def _load(ckpt: Path, root: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list[float]]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    latest = _latest(ckpt)
    if latest is None:
        return 0, []
    model_sd, optim_sd = get_state_dict(root, opt)
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(ckpt / f"step-{latest['step']}"))
    set_state_dict(root, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return int(latest["step"]), [float(x) for x in latest["losses"]]


def train_stage2(
    model: MLLM,
    conversations: Sequence[Conversation],
    features: Mapping[str, Tensor] | None,
    *,
    lr: float,
    batch: int,
    steps: int,
    seed: int,
    strategy: str = "single",
    activation_checkpointing: bool = False,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 0,
    log: Callable[[int, float], None] | None = None,
    root: nn.Module | None = None,
    chat_template: bool = True,
) -> tuple[nn.Module, list[float]]:
    """Train the adapter and the LM on ``conversations`` (loss on assistant turns); every rank
    of the default group calls this with the same arguments. ``features`` None trains blind.
    Returns the wrapped root (its parameters are the model's, sharded under FSDP2) and the
    global loss of every step. AdamW, 3% warmup then cosine, clipping at 1.0 (LLaVA's).

    The parameters trained are those of the root that require gradients. ``root``: one
    already wrapped (``wrap_stage2``; FSDP2 keeps one root for both stages, the LM frozen in
    the first by ``requires_grad``), else ``model`` is wrapped here with ``strategy``. With a
    ``checkpoint_dir`` the last step is checkpointed too: a finished stage resumes as done.
    ``chat_template`` False lays conversations out plainly even when the tokenizer has one."""
    device = next(model.adapter.parameters()).device
    world, rank = D.world(), _rank()
    if batch < world:
        raise ValueError(f"stage-2 batch {batch} is smaller than the {world} ranks")
    if root is None:
        root = wrap_stage2(model, strategy, device, activation_checkpointing)
    params = [p for p in root.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.999))
    start, losses = (0, []) if checkpoint_dir is None else _load(checkpoint_dir, root, opt)
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    sharded = D.is_sharded(root)
    amp = dev.autocast_dtype(device)
    root.train()
    encoded: dict[int, Any] = {}  # conversations repeat across epochs: tokenised once

    def encoded_of(i: int) -> Any:
        e = encoded.get(i)
        if e is None:
            c = conversations[i]
            if features is None:  # blind: the same conversations without their images
                c = Conversation(c.turns, None)
            e = encode(tok, c, model.tokens, template=chat_template)
            if len(encoded) < 200_000:
                encoded[i] = e
        return e

    for step, idx in enumerate(_order(len(conversations), batch, steps, seed)):
        if step < start:
            continue
        for g in opt.param_groups:
            g["lr"] = lr * _lr_scale(step, steps)
        mine_idx = idx[rank::world]
        mine = [conversations[i] for i in mine_idx]
        if features is None:
            mine = [Conversation(c.turns, None) for c in mine]
        enc = [encoded_of(i) for i in mine_idx]
        ids, mask, lab, is_img = (t.to(device) for t in collate(enc, pad, left_pad=False))
        feats = None
        if features is not None:
            rows = image_rows(enc, [features[c.image] if c.image else None for c in mine])
            feats = None if rows is None else rows.to(device)
        count = D.all_reduce_sum(torch.tensor([float((lab[:, 1:] != -100).sum())], device=device))
        with dev.autocast(device, amp):
            loss_sum = root(ids, mask, lab, is_img, feats)
        # DDP and FSDP2 average gradients over ranks: scale back to the global token mean
        (loss_sum * world / count.clamp_min(1.0)).backward()
        D.clip_grad_norm(params, 1.0, sharded)
        opt.step()
        opt.zero_grad(set_to_none=True)
        total = D.all_reduce_sum(loss_sum.detach().reshape(1).double())
        losses.append(float(total) / max(float(count), 1.0))
        if (
            checkpoint_dir is not None
            and checkpoint_every
            and ((step + 1) % checkpoint_every == 0 or step + 1 == steps)
        ):
            _save(checkpoint_dir, root, opt, step + 1, losses)
        if log is not None:
            log(step, losses[-1])
    root.eval()
    return root, losses


def full_state(root: nn.Module) -> dict[str, Tensor]:
    """The whole (unsharded) state dict of a stage-2 root on the CPU: on every rank when it is
    not sharded, on rank 0 only under FSDP2 (the other ranks get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not D.is_sharded(root):
        inner = getattr(root, "module", root)
        return {k: v.detach().cpu() for k, v in inner.state_dict().items()}
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return dict(get_model_state_dict(root, options=opts))  # type: ignore[arg-type]
