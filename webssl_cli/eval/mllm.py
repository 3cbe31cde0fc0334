"""The LLaVA-style MLLM on a frozen encoder: final-layer patch features resized to ``tokens``
visual tokens -> MLP adapter (GELU) -> a causal LM from transformers. Stage 1 trains the
adapter, stage 2 the adapter and the LM; answers are generated greedily.

Sequence layout (loss on the answer and [EOS] only)::

    [BOS] <visual tokens x T> question tokens "answer:" | answer tokens [EOS]

Without patches (``None``: the blind twin, the baseline every VQA score is compared with) the
visual tokens are left out of the sequence altogether, not zeroed.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Adapter(nn.Module):
    """LLaVA's ``mlp{depth}x_gelu`` projector: Linear, then (GELU, Linear) x (depth - 1)."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def resize_tokens(patches: Tensor, tokens: int) -> Tensor:
    """(B, N, D) patch tokens on a square grid -> (B, tokens, D): bilinear on the 2-D grid when
    ``tokens`` is a square (576 = 24 x 24 in the paper), linear along the sequence otherwise."""
    b, n, d = patches.shape
    if n == tokens:
        return patches
    side, out_side = math.isqrt(n), math.isqrt(tokens)
    if side * side == n and out_side * out_side == tokens:
        grid = patches.transpose(1, 2).reshape(b, d, side, side)
        grid = F.interpolate(grid, size=(out_side, out_side), mode="bilinear", align_corners=False)
        return grid.flatten(2).transpose(1, 2)
    return F.interpolate(
        patches.transpose(1, 2), size=tokens, mode="linear", align_corners=False
    ).transpose(1, 2)


def tiny_llama(vocab_size: int, width: int, layers: int, heads: int, max_len: int) -> nn.Module:
    """A small Llama trained from scratch (no PyPI package ships a usable pretrained tiny LM).
    Eager attention: on CPU it is ~10x faster than sdpa at this size (FACTS.md)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_len,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return LlamaForCausalLM._from_config(cfg, attn_implementation="eager")


class MLLM(nn.Module):
    lm: Any  # a transformers causal LM (its methods are untyped)

    def __init__(
        self, lm: nn.Module, tokenizer: Any, vis_dim: int, tokens: int, adapter_depth: int = 2
    ) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.tokens = tokens
        hidden = self.lm.get_input_embeddings().weight.shape[1]
        self.adapter = Adapter(vis_dim, hidden, adapter_depth)
        self._token_cache: dict[str, list[int]] = {}  # prompts and answers repeat across steps

    # ---- sequences --------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        ids = self._token_cache.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False).input_ids)
            if len(self._token_cache) < 200_000:
                self._token_cache[text] = ids
        return ids

    def _layout(
        self,
        patches: Tensor | None,
        prompts: Sequence[str],
        answers: Sequence[str] | None,
        left_pad: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """inputs_embeds (B, L, H), attention_mask (B, L), labels (B, L); no visual tokens
        when ``patches`` is None."""
        tok = self.tokenizer
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        n_vis = 0 if patches is None else self.tokens
        rows, labels, img_mask = [], [], []
        for i, prompt in enumerate(prompts):
            p = bos + [pad] * n_vis + self._ids(f"{prompt} answer:")
            a = (self._ids(f" {answers[i]}") + [tok.eos_token_id]) if answers is not None else []
            rows.append(p + a)
            labels.append([-100] * len(p) + a)
            img_mask.append(
                [False] * len(bos) + [True] * n_vis + [False] * (len(p) - len(bos) - n_vis + len(a))
            )
        width = max(len(r) for r in rows)

        def padded(seq: list[Any], fill: Any) -> list[Any]:
            extra = [fill] * (width - len(seq))
            return extra + seq if left_pad else seq + extra

        device = next(self.adapter.parameters()).device
        ids = torch.tensor([padded(r, pad) for r in rows], device=device)
        mask = torch.tensor([padded([1] * len(r), 0) for r in rows], device=device)
        lab = torch.tensor([padded(r, -100) for r in labels], device=device)
        is_img = torch.tensor([padded(m, False) for m in img_mask], device=device)
        emb = self.lm.get_input_embeddings()(ids)
        if patches is None:
            return emb, mask, lab
        patches = patches.to(device)
        vis = self.adapter(resize_tokens(patches, self.tokens)).to(emb.dtype)  # (B, T, H)
        emb = emb.masked_scatter(is_img.unsqueeze(-1), vis)  # row-major: row b gets vis[b]
        return emb, mask, lab

    def loss(
        self, patches: Tensor | None, prompts: Sequence[str], answers: Sequence[str]
    ) -> Tensor:
        emb, mask, lab = self._layout(patches, prompts, answers, left_pad=False)
        logits = self.lm(inputs_embeds=emb, attention_mask=mask).logits
        return F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), lab[:, 1:].flatten(), ignore_index=-100
        )

    @torch.no_grad()
    def generate(
        self,
        patches: Tensor | None,
        prompts: Sequence[str],
        max_new_tokens: int = 16,
        use_hf: bool = False,
    ) -> list[str]:
        """Greedy answers. Our loop (KV cache, left padding, positions from the mask) avoids
        ``generate``'s per-call overhead, which dominates at this model size; ``use_hf`` runs
        transformers' ``generate`` instead (a test checks the two agree)."""
        emb, mask, _ = self._layout(patches, prompts, None, left_pad=True)
        tok = self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        if use_hf:
            out = self.lm.generate(
                inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                num_beams=1, eos_token_id=eos, pad_token_id=pad,
            )  # fmt: skip
            return [s.strip() for s in tok.batch_decode(out, skip_special_tokens=True)]
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        res = self.lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True)
        # transformers 5.x names the KV cache ``cache``; 4.x ``past_key_values``
        cache_kw = (
            "cache"
            if "cache" in inspect.signature(self.lm.forward).parameters
            else "past_key_values"
        )
        past, nxt = getattr(res, cache_kw), res.logits[:, -1].argmax(-1)  # (B,)
        done = torch.zeros_like(nxt, dtype=torch.bool)
        tokens = []
        for _ in range(max_new_tokens):
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            tokens.append(nxt)
            done |= nxt == eos
            if bool(done.all()) or len(tokens) == max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
            res = self.lm(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                **{cache_kw: past},
            )
            past, nxt = getattr(res, cache_kw), res.logits[:, -1].argmax(-1)
        out_ids = torch.stack(tokens, dim=1)
        return [s.strip() for s in tok.batch_decode(out_ids, skip_special_tokens=True)]


def train_stage(
    model: MLLM,
    examples: Sequence[tuple[str, str, str]],
    features: Mapping[str, Tensor] | None,  # a dict, or the on-disk eval.feature_cache
    params: list[nn.Parameter],
    *,
    lr: float,
    batch: int,
    steps: int,
    seed: int,
    log: Callable[[int, float], None] | None = None,
) -> float:
    """AdamW (no weight decay), 3% linear warmup then cosine (LLaVA's schedule); examples are
    (image key, prompt, answer); ``features`` None trains blind (no visual tokens). Returns the
    mean loss of the last 10% of steps."""
    if steps <= 0 or not examples:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.999))
    warm = max(1, round(0.03 * steps))
    order: list[int] = []
    tail: list[float] = []
    model.train()
    for step in range(steps):
        if len(order) < batch:
            order += torch.randperm(len(examples), generator=gen).tolist()
        idx, order = order[:batch], order[batch:]
        ex = [examples[i] for i in idx]
        scale = (
            (step + 1) / warm
            if step < warm
            else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        )
        for g in opt.param_groups:
            g["lr"] = lr * scale
        patches = None if features is None else torch.stack([features[k] for k, _, _ in ex])
        loss = model.loss(patches, [p for _, p, _ in ex], [a for _, _, a in ex])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step >= steps - max(1, steps // 10):
            tail.append(float(loss.detach()))
        if log is not None:
            log(step, float(loss.detach()))
    model.eval()
    return sum(tail) / len(tail)
