"""Conversations laid out as the language model expects them: its own chat template when the
tokenizer has one (Llama-3 Instruct in the paper), else the plain layout of ``eval.mllm``.

A conversation is an optional image and a list of turns (system / user / assistant); the whole
conversation is one training sequence, loss on every assistant turn (its text and the token
that ends it) and nowhere else. The image marker ``<image>`` inside a user turn is where the
visual tokens go (prepended to the first user turn when absent); a conversation without an
image has no visual tokens at all (the text-only samples of instruction-tuning mixtures).

Masks come from the template itself: the text up to an assistant turn is the template rendered
on the turns before it with the generation prompt; what the full rendering adds after that is
the assistant's, so any template whose renderings are prefixes of one another works (Llama-3,
Vicuna, ChatML). A template that is not prefix-stable is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from webssl_cli import device as dev
from webssl_cli.eval.mllm import MLLM, resize_tokens

IMAGE = "<image>"
IGNORE = -100


@dataclass(frozen=True)
class Conversation:
    turns: tuple[tuple[str, str], ...]  # (role, text); roles: system, user, assistant
    image: str | None = None  # image key; None: a text-only sample

    @staticmethod
    def qa(image: str | None, question: str, answer: str | None = None) -> Conversation:
        turns = [("user", question)] + ([("assistant", answer)] if answer is not None else [])
        return Conversation(tuple(turns), image)


@dataclass
class Encoded:
    """One conversation as token ids: ``image`` marks the visual-token slots (their ids are
    placeholders), ``labels`` is the id where loss is taken and -100 elsewhere."""

    ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    image: list[bool] = field(default_factory=list)

    def add(self, ids: Sequence[int], train: bool, image: bool = False) -> None:
        self.ids += ids
        self.labels += list(ids) if train else [IGNORE] * len(ids)
        self.image += [image] * len(ids)


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _with_image(conv: Conversation) -> list[dict[str, str]]:
    msgs = [{"role": r, "content": t} for r, t in conv.turns]
    if conv.image is not None and not any(IMAGE in m["content"] for m in msgs):
        first = next(i for i, m in enumerate(msgs) if m["role"] == "user")
        msgs[first] = {"role": "user", "content": f"{IMAGE}\n{msgs[first]['content']}"}
    return msgs


def _segments(tokenizer: Any, msgs: list[dict[str, str]], generate: bool) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, is_assistant) pieces."""

    def render(part: list[dict[str, str]], prompt: bool) -> str:
        return str(
            tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=prompt)
        )

    out: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix, full = render(msgs[:i], True), render(msgs[: i + 1], False)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise ValueError(
                "the tokenizer's chat template is not prefix-stable (a turn changes the text "
                "before it); loss masks cannot be derived from it"
            )
        out += [(prefix[len(done) :], False), (full[len(prefix) :], True)]
        done = full
    if generate or msgs[-1]["role"] != "assistant":
        end = render(msgs, generate)
        if not end.startswith(done):
            raise ValueError("the tokenizer's chat template is not prefix-stable")
        out.append((end[len(done) :], False))
    return [(t, a) for t, a in out if t]


def encode(
    tokenizer: Any,
    conv: Conversation,
    n_image: int,
    *,
    generate: bool = False,
    template: bool = True,
) -> Encoded:
    """Token ids, labels and visual-token slots of ``conv``; ``generate`` appends the
    assistant prompt (for answering the last user turn). Without a chat template (or with
    ``template`` False) the layout is ``[BOS] <visual tokens> question answer: | answer [EOS]``
    per turn pair, as ``MLLM`` uses."""
    enc = Encoded()
    n_vis = n_image if conv.image is not None else 0
    slot = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if not template or not has_template(tokenizer):
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        enc.add(bos, False)
        enc.add([slot] * n_vis, False, image=True)
        for role, text in conv.turns:
            text = text.replace(IMAGE, "").strip()
            if role == "assistant":
                ids = tokenizer(f" {text}", add_special_tokens=False).input_ids
                enc.add(list(ids) + [tokenizer.eos_token_id], True)
            else:
                enc.add(tokenizer(f"{text} answer:", add_special_tokens=False).input_ids, False)
        return enc
    placed = False
    for text, train in _segments(tokenizer, _with_image(conv), generate):
        pieces = text.split(IMAGE)
        for j, piece in enumerate(pieces):
            if j > 0:
                if placed or n_vis == 0:
                    raise ValueError("a conversation has one image marker at most")
                enc.add([slot] * n_vis, False, image=True)
                placed = True
            if piece:
                enc.add(tokenizer(piece, add_special_tokens=False).input_ids, train)
    return enc


def collate(
    batch: Sequence[Encoded], pad: int, left_pad: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """ids, attention_mask, labels and visual-slot mask (B, L) of encoded conversations."""
    width = max(len(e.ids) for e in batch)

    def padded(seq: list[Any], fill: Any) -> list[Any]:
        extra = [fill] * (width - len(seq))
        return extra + seq if left_pad else seq + extra

    ids = torch.tensor([padded(e.ids, pad) for e in batch])
    mask = torch.tensor([padded([1] * len(e.ids), 0) for e in batch])
    lab = torch.tensor([padded(e.labels, IGNORE) for e in batch])
    is_img = torch.tensor([padded(e.image, False) for e in batch])
    return ids, mask, lab, is_img


def image_rows(batch: Sequence[Encoded], patches: Sequence[Tensor | None]) -> Tensor | None:
    """(B_img, N, D) patches of the rows that have visual slots, in row order; None if none."""
    rows = [p for e, p in zip(batch, patches, strict=True) if any(e.image)]
    if any(p is None for p in rows):
        raise ValueError("a conversation with an image was given no patch features")
    return torch.stack([p for p in rows if p is not None]) if rows else None


def embed(
    adapter: nn.Module, lm: Any, tokens: int, ids: Tensor, is_img: Tensor, feats: Tensor | None
) -> Tensor:
    """Token embeddings with the adapter's visual tokens written into the visual slots."""
    emb = lm.get_input_embeddings()(ids)
    if feats is None:
        return emb  # type: ignore[no-any-return]
    vis = adapter(resize_tokens(feats, tokens)).to(emb.dtype)
    return emb.masked_scatter(is_img.unsqueeze(-1), vis)  # type: ignore[no-any-return]


def layout(
    model: MLLM, batch: Sequence[Encoded], patches: Sequence[Tensor | None], left_pad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """inputs_embeds (B, L, H), attention_mask (B, L), labels (B, L) of encoded conversations;
    ``patches[i]`` (N, D) fills row i's visual slots (None for a text-only row)."""
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(model.adapter.parameters()).device
    ids, mask, lab, is_img = (t.to(device) for t in collate(batch, pad, left_pad))
    feats = image_rows(batch, patches)
    feats = None if feats is None else feats.to(device)
    return embed(model.adapter, model.lm, model.tokens, ids, is_img, feats), mask, lab


def token_loss_sum(model: MLLM, emb: Tensor, mask: Tensor, lab: Tensor) -> tuple[Tensor, int]:
    """Summed next-token cross-entropy over labelled tokens, and their count."""
    logits = model.lm(inputs_embeds=emb, attention_mask=mask).logits
    target = lab[:, 1:].flatten()
    loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), target, ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((target != IGNORE).sum())


def chat_loss(model: MLLM, batch: Sequence[Encoded], patches: Sequence[Tensor | None]) -> Tensor:
    """Mean loss per assistant token of a batch of conversations."""
    loss, n = token_loss_sum(model, *layout(model, batch, patches, left_pad=False))
    return loss / max(n, 1)


@torch.no_grad()
def chat_generate(
    model: MLLM,
    conversations: Sequence[Conversation],
    patches: Sequence[Tensor | None],
    max_new_tokens: int = 16,
) -> list[str]:
    """Greedy answers to the last user turn of each conversation, laid out by ``encode``
    (the chat template's assistant prompt appended), through transformers' ``generate``."""
    tok = model.tokenizer
    batch = [encode(tok, c, model.tokens, generate=True) for c in conversations]
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    device = next(model.adapter.parameters()).device
    with dev.autocast(device, dev.autocast_dtype(device)):  # bf16 on CUDA, fp32 on CPU
        emb, mask, _ = layout(model, batch, patches, left_pad=True)
        out = model.lm.generate(
            inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
            do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad,
        )  # fmt: skip
    return [s.strip() for s in tok.batch_decode(out, skip_special_tokens=True)]
