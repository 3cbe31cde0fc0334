"""Training and answering of one MLLM of the VQA evaluation (the encoder's, or its blind twin),
over the job's ranks.

Placement: ``resolve_placement(cfg.placement, world, LM parameters)`` (``study.vqa_cost``
prices the same choice). Both stages run data-parallel over every rank, each rank taking its
slice of the one global batch (``mllm_dist.train_stage2``), so that the losses are one
process's at any world size:

- 'fsdp': one FSDP2 root for both stages. Stage 1 freezes the LM by ``requires_grad``
  (FSDP2 reads it at every unshard), so the LM is never whole on a rank. Rank 0 alone with a
  broadcast adapter would need the whole LM on one GPU and leave the other ranks idle through
  stage 1, which at the paper's scale (~1.2M captions through an 8B LM) is GPU-days;
- 'ddp': a DDP root per stage (DDP fixes the parameters it reduces when it is built);
- 'single': one process.

Every stage checkpoints (``torch.distributed.checkpoint``, ``CHECKPOINTS_PER_STAGE`` times and
at its end) under ``<cache>/train-<stage>/``; a killed job resumes there. Once both stages are
done rank 0 writes ``mllm.pt`` (whole, fp32) and the checkpoints go. Answers are generated
from a whole model on every rank (reloaded from ``mllm.pt`` after FSDP2), a batch per rank
per round, and appended to ``predictions.jsonl`` by rank 0.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from webssl_cli.errors import UserError
from webssl_cli.eval import mllm_dist as MD
from webssl_cli.eval.benchmarks import Question
from webssl_cli.eval.chat import Conversation, chat_generate, has_template
from webssl_cli.eval.mllm import MLLM, tiny_llama
from webssl_cli.eval.synth_vqa import Example
from webssl_cli.eval.vqa_dist import SINGLE, Ranks, barrier, gather, round_robin, share
from webssl_cli.rundir import current_umask
from webssl_cli.specs.evals import VqaEval, resolve_placement

CHECKPOINTS_PER_STAGE = 10


def _default_steps(n: int, batch: int) -> int:
    return max(1, -(-n // batch))  # one epoch, as LLaVA's stages


def _tokenizer_and_lm(
    cache: Path, cfg: VqaEval, texts: list[str], ranks: Ranks
) -> tuple[Any, nn.Module]:
    torch.manual_seed(cfg.seed)  # the LM's init: identical for the encoder and its blind twin
    if cfg.llm == "tiny":
        tok_dir = cache / "tokenizer"
        if ranks.lead and not tok_dir.exists():
            from webssl_cli.eval.tokenizer import train_word_tokenizer

            train_word_tokenizer(texts).save_pretrained(str(tok_dir))
        barrier(ranks)  # every rank reads the tokenizer rank 0 trained
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
        torch.manual_seed(cfg.seed)
        lm = tiny_llama(
            len(tokenizer), cfg.lm_width, cfg.lm_layers, cfg.lm_heads, max_len=cfg.tokens + 256
        )
        return tokenizer, lm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_path = Path(cfg.llm)
    if not lm_path.exists():
        raise UserError(f"evals[].llm: {cfg.llm!r} is neither 'tiny' nor a local model directory")
    tokenizer = AutoTokenizer.from_pretrained(str(lm_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, AutoModelForCausalLM.from_pretrained(
        str(lm_path), attn_implementation="eager"
    )


class Placement:
    """How the stages of one MLLM are spread over the ranks, and where they checkpoint."""

    def __init__(self, cfg: VqaEval, ranks: Ranks, lm: nn.Module, cache: Path) -> None:
        n_params = sum(p.numel() for p in lm.parameters())
        self.strategy = resolve_placement(cfg.placement, ranks.world, n_params)
        if self.strategy == "single" and ranks.world > 1:
            raise UserError(
                f"evals[].placement: 'single' but the job has {ranks.world} ranks; use auto, "
                "ddp or fsdp, or run the evaluation as one task"
            )
        ac = cfg.activation_checkpointing
        self.ac = self.strategy == "fsdp" if ac is None else ac
        self.ranks = ranks
        self.cache = cache
        self.root: nn.Module | None = None
        self.stage = ""
        self.chat_template = cfg.chat_template

    def wrap(self, model: MLLM) -> nn.Module:
        """The stage's root: FSDP2 wraps once, DDP again for each stage's trainable set."""
        if self.root is None or self.strategy == "ddp":
            self.root = MD.wrap_stage2(model, self.strategy, self.ranks.device, self.ac)
        return self.root

    def release(self) -> None:
        if self.strategy == "ddp" and self.root is not None and self.ranks.world > 1:
            self.root._remove_autograd_hooks()  # type: ignore[operator]
            self.root = None

    @property
    def sharded(self) -> bool:
        return self.root is not None and MD.D.is_sharded(self.root)


def train_stage(
    model: MLLM,
    examples: list[Example],
    features: Mapping[str, torch.Tensor] | None,
    params: list[nn.Parameter],
    place: Placement,
    *,
    lr: float,
    batch: int,
    steps: int,
    seed: int,
) -> float:
    """One stage on (image key, prompt, answer) examples over the job's ranks, training only
    ``params``; the mean loss of its last 10% of steps (NaN when it has none)."""
    if steps <= 0 or not examples:
        return float("nan")
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    root = place.wrap(model)
    convs = [Conversation.qa(k, q, a) for k, q, a in examples]
    every = max(1, -(-steps // CHECKPOINTS_PER_STAGE))
    _, losses = MD.train_stage2(
        model, convs, features, lr=lr, batch=batch, steps=steps, seed=seed, root=root,
        checkpoint_dir=place.cache / f"train-{place.stage}", checkpoint_every=every,
        chat_template=place.chat_template,
    )  # fmt: skip
    place.release()
    tail = losses[-max(1, steps // 10) :]
    return sum(tail) / len(tail)


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` straight to a temporary file, then renamed (no copy of a large state in
    memory)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def train_and_answer(
    cache: Path,
    cfg: VqaEval,
    features: Mapping[str, torch.Tensor] | None,
    stage1: list[Example],
    stage2: list[Example],
    test: list[Question],
    timings: dict[str, float],
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """Train (or load) the MLLM in ``cache`` and answer every test question not yet answered
    there. ``features`` None: the blind twin. Stage 1 trains only the adapter unless
    ``stage1_lm``; the twin has no adapter, so without ``stage1_lm`` its LM would stay frozen
    there and it skips the stage (the same model results); with it, the twin's LM trains on
    the same captions in the same order, without visual tokens."""
    texts = [f"{p} answer: {a}" for _, p, a in stage1 + stage2] + [
        f"{q.prompt()} answer:" for q in test
    ]
    vis_dim = 1 if features is None else next(iter(features.values())).shape[-1]

    def fresh() -> MLLM:
        tokenizer, lm = _tokenizer_and_lm(cache, cfg, texts, ranks)
        return MLLM(lm, tokenizer, vis_dim, cfg.tokens, cfg.adapter_depth).to(ranks.device)

    model = fresh()
    # the LM's own chat template when it has one: conversations laid out by eval.chat
    use_chat = cfg.chat_template and has_template(model.tokenizer)
    s1 = (
        cfg.stage1_steps
        if cfg.stage1_steps is not None
        else _default_steps(len(stage1), cfg.stage1_batch)
    )
    if features is None and not cfg.stage1_lm:
        s1 = 0
    examples2 = stage2 + stage1 if cfg.stage2_captions else stage2
    s2 = (
        cfg.stage2_steps
        if cfg.stage2_steps is not None
        else _default_steps(len(examples2), cfg.stage2_batch)
    )
    model_path = cache / "mllm.pt"
    losses: dict[str, float | None] = {}
    if model_path.exists():
        losses = _load(model, model_path)
    else:
        place = Placement(cfg, ranks, model.lm, cache)
        if s1 > 0:
            t = time.time()
            params1 = [] if features is None else list(model.adapter.parameters())
            if cfg.stage1_lm:
                params1 += list(model.lm.parameters())
            place.stage = "stage1"
            loss1 = train_stage(model, stage1, features, params1, place, lr=cfg.stage1_lr,
                                batch=cfg.stage1_batch, steps=s1, seed=cfg.seed)  # fmt: skip
            losses["stage1"] = None if math.isnan(loss1) else loss1
            timings["stage1_s"] = time.time() - t
        t = time.time()
        params = list(model.lm.parameters())
        if features is not None:
            params = list(model.adapter.parameters()) + params
        place.stage = "stage2"
        loss2 = train_stage(model, examples2, features, params, place, lr=cfg.stage2_lr,
                            batch=cfg.stage2_batch, steps=s2, seed=cfg.seed + 1)  # fmt: skip
        losses["stage2"] = None if math.isnan(loss2) else loss2
        timings["stage2_s"] = time.time() - t
        _finish_training(model, place, model_path, losses, ranks)
        if place.sharded:  # the trained parameters are shards: answer with a whole model
            place.root = None
            model = fresh()
            _load(model, model_path)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()

    t = time.time()
    predictions, generated = _answer(cache, cfg, model, features, test, use_chat, ranks)
    timings["generate_s"] = time.time() - t
    return {"predictions": predictions, "losses": losses, "stage1_steps": s1,
            "stage2_steps": s2, "generated": generated}  # fmt: skip


def _load(model: MLLM, path: Path) -> dict[str, float | None]:
    # mapped, not read: the ranks of a node share the pages of one large file
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    model.adapter.load_state_dict(state["adapter"])
    model.lm.load_state_dict(state["lm"])
    return dict(state.get("losses", {}))


def _finish_training(
    model: MLLM, place: Placement, path: Path, losses: dict[str, float | None], ranks: Ranks
) -> None:
    """Rank 0 writes the trained MLLM whole (gathered from the shards under FSDP2), then the
    stage checkpoints are dropped: ``mllm.pt`` is the resume point from here on."""
    if place.root is not None and place.sharded:
        full = MD.full_state(place.root)
        adapter = {
            k.removeprefix("adapter."): v for k, v in full.items() if k.startswith("adapter.")
        }
        lm = {k.removeprefix("lm."): v for k, v in full.items() if k.startswith("lm.")}
    else:
        adapter = {k: v.detach().cpu() for k, v in model.adapter.state_dict().items()}
        lm = {k: v.detach().cpu() for k, v in model.lm.state_dict().items()}
    if ranks.lead:
        save_torch(path, {"adapter": adapter, "lm": lm, "losses": losses})
        for stage in ("stage1", "stage2"):
            shutil.rmtree(path.parent / f"train-{stage}", ignore_errors=True)
    barrier(ranks)


def _answer(
    cache: Path,
    cfg: VqaEval,
    model: MLLM,
    features: Mapping[str, torch.Tensor] | None,
    test: list[Question],
    use_chat: bool,
    ranks: Ranks,
) -> tuple[dict[str, str], int]:
    """Greedy answers to the questions without a line in ``predictions.jsonl`` (rank 0's
    reading, shared), a batch per rank per round; rank 0 appends each round's answers in
    batch order and fsyncs. Returns all answers and how many were generated now."""
    pred_path = cache / "predictions.jsonl"
    predictions = share(ranks, read_predictions(pred_path) if ranks.lead else {})
    todo = [q for q in test if q.id not in predictions]
    out = open(pred_path, "a", encoding="utf-8") if ranks.lead else None  # noqa: SIM115
    try:
        for qs in round_robin(todo, cfg.batch_size, ranks):
            answers: list[str] = []
            if qs:
                patches = None if features is None else torch.stack([features[q.image] for q in qs])
                if use_chat:
                    convs = [Conversation.qa(None if patches is None else q.image, q.prompt())
                             for q in qs]  # fmt: skip
                    rows = [None] * len(qs) if patches is None else list(patches)
                    answers = chat_generate(model, convs, rows, cfg.max_new_tokens)
                else:
                    answers = model.generate(patches, [q.prompt() for q in qs], cfg.max_new_tokens)
            got = [(q.id, a) for q, a in zip(qs, answers, strict=True)]
            for part in gather(ranks, got):
                for qid, a in part:
                    predictions[qid] = a
                    if out is not None:
                        out.write(json.dumps({"id": qid, "prediction": a}) + "\n")
            if out is not None:
                out.flush()
                os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    return predictions, len(todo)


def read_predictions(path: Path) -> dict[str, str]:
    """Cached answers; a torn last line (the process died mid-write) is ignored."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # cut the torn line so that appends start clean
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                d = json.loads(line)
                out[str(d["id"])] = str(d["prediction"])
            except (ValueError, KeyError):
                continue
    return out
