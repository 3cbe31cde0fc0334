"""Stage-2 throughput of the VQA evaluation: tokens/s per GPU and peak memory per GPU next to
the plan's estimate (``study/vqa_cost.py``).

The LM is built from a config (random weights: speed and memory do not depend on them) with
Llama-3 8B Instruct's shape by default, or read from ``--llm DIR/config.json``; each example is
a conversation with one image (576 visual tokens from 1024-wide patch features through the
2-layer adapter) and a ~256-token text, trained by ``eval.mllm_dist.train_stage2`` (bf16
autocast on CUDA, FSDP2 over the ranks with activation checkpointing, AdamW, clipping).

    python benchmarks/gpu_vqa.py                          # one GPU, llama3-8b (needs ~140 GB)
    python benchmarks/gpu_vqa.py --ranks 8 --strategy fsdp --micro-batch 4
    python benchmarks/gpu_vqa.py --lm llama-1b --micro-batch 8 --json out.json
    python benchmarks/gpu_vqa.py --dry-run                # CPU self-check: tiny LM, 3 steps
    python benchmarks/gpu_vqa.py --dry-run --ranks 2 --strategy fsdp    # 2 gloo ranks

With ``--ranks N`` the script starts N processes itself (env:// rendezvous, as torchrun).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from webssl_cli import device as dev
from webssl_cli.specs.evals import VqaEval
from webssl_cli.study.vqa_cost import LmShape, price_vqa

SHAPES = {
    "llama3-8b": LmShape(32, 4096, 14336, 32, 8, 128256, False),
    "llama-1b": LmShape(16, 2048, 8192, 32, 8, 128256, True),  # Llama-3.2 1B's shape
    "tiny": LmShape(2, 64, 256, 4, 4, 512, True),
}
PEAK, MFU = 989e12, 0.4


def build(shape: LmShape, vis_dim: int, tokens: int, device: torch.device) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    from webssl_cli.eval.mllm import MLLM
    from webssl_cli.eval.tokenizer import train_word_tokenizer

    cfg = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden,
                      intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                      num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                      tie_word_embeddings=shape.tied, max_position_embeddings=4096,
                      pad_token_id=0, bos_token_id=2, eos_token_id=3)  # fmt: skip
    torch.manual_seed(0)
    attn = "sdpa" if device.type == "cuda" else "eager"
    lm = LlamaForCausalLM._from_config(cfg, attn_implementation=attn)
    tok = train_word_tokenizer([" ".join(f"w{i}" for i in range(300))])
    return MLLM(lm, tok, vis_dim, tokens).to(device)


def rank_main(args: argparse.Namespace) -> dict[str, object]:
    from webssl_cli.eval.chat import Conversation
    from webssl_cli.eval.mllm_dist import train_stage2
    from webssl_cli.train import distributed as D

    env = D.detect_env()
    device = torch.device("cpu") if args.dry_run else D.device_for(env, dev.pick_device())
    D.init_process_group(env, device)
    shape = SHAPES[args.lm]
    model = build(shape, args.vis_dim, args.tokens, device)
    world = D.world()
    batch = args.micro_batch * world
    n_text = args.text_tokens // 2
    convs = [Conversation((("user", " ".join(f"w{(i + j) % 300}" for j in range(n_text))),
                           ("assistant", " ".join(f"w{(i * j) % 300}" for j in range(n_text)))),
                          image=f"img{i % 4}") for i in range(batch)]  # fmt: skip
    g = torch.Generator().manual_seed(0)
    side = int(args.tokens**0.5)
    feats = {f"img{i}": torch.randn(side * side, args.vis_dim, generator=g) for i in range(4)}
    stamps: list[float] = []

    def log(step: int, loss: float) -> None:
        dev.synchronize(device)
        stamps.append(time.perf_counter())

    built_lm_params = sum(p.numel() for p in model.lm.parameters())  # before sharding
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ac = (
        args.strategy == "fsdp"
        if args.activation_checkpointing is None
        else args.activation_checkpointing
    )
    _, losses = train_stage2(model, convs, feats, lr=1e-5, batch=batch,
                             steps=args.warmup + args.steps, seed=0, strategy=args.strategy,
                             activation_checkpointing=ac, log=log)  # fmt: skip
    from webssl_cli.eval.chat import encode

    seq = sum(len(encode(model.tokenizer, c, args.tokens).ids) for c in convs) / len(convs)
    dt = (stamps[-1] - stamps[args.warmup - 1]) / args.steps
    cfg = VqaEval(tokens=args.tokens, plan_text_tokens=max(1, round(seq) - args.tokens),
                  placement=args.strategy, activation_checkpointing=ac)  # fmt: skip
    est = price_vqa(cfg, gpus=world, gpu_memory_gb=0, peak_tflops=PEAK / 1e12, mfu=MFU,
                    micro_batch=args.micro_batch, shape=shape)  # fmt: skip
    est_params = shape.params
    local_params = sum(D.local(p).numel() for p in model.parameters())
    tokens_per_s = args.micro_batch * seq / dt
    flops_per_token = (8.0 if ac else 6.0) * est_params
    return {
        "lm": args.lm, "strategy": args.strategy, "ranks": world, "device": str(device),
        "activation_checkpointing": ac, "micro_batch": args.micro_batch, "seq_len": seq,
        "step_s": dt, "tokens_per_s_per_gpu": tokens_per_s,
        "mfu": tokens_per_s * flops_per_token / PEAK if device.type == "cuda" else None,
        "losses": losses, "lm_params": est_params, "built_lm_params": built_lm_params,
        "local_params": local_params,
        "estimate_states_bytes": est["memory"]["states"],
        "measured_states_bytes": 16 * local_params,
        "peak_memory_bytes": D.peak_memory_bytes(device) or None,
        "estimate_memory_bytes": est["memory_bytes"], "estimate_parts": est["memory"],
        "estimate_tokens_per_s_per_gpu": est["stage2_tokens_per_s_per_gpu"],
    }  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(argv: list[str], ranks: int) -> list[dict[str, object]]:
    """Run this script as ``ranks`` processes (env://) and collect each rank's result."""
    port, out = _port(), Path(tempfile.mkdtemp(prefix="gpu_vqa-"))
    procs = []
    for r in range(ranks):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(r),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        cmd = [sys.executable, __file__, *argv, "--rank-out", str(out / f"{r}.json")]
        procs.append(subprocess.Popen(cmd, env=env))
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a rank failed")
    return [json.loads((out / f"{r}.json").read_text()) for r in range(ranks)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lm", choices=sorted(SHAPES), default="llama3-8b")
    ap.add_argument("--strategy", choices=["single", "ddp", "fsdp"], default=None)
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=576)
    ap.add_argument("--vis-dim", type=int, default=1024)
    ap.add_argument("--text-tokens", type=int, default=256)
    ap.add_argument("--activation-checkpointing", type=int, choices=[0, 1], default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dry-run", action="store_true", help="CPU self-check with a tiny LM")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rank-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dry_run:
        args.lm, args.tokens, args.vis_dim, args.text_tokens = "tiny", 16, 32, 16
        args.micro_batch, args.warmup, args.steps = 2, 1, 2
        torch.set_num_threads(1)
    if args.strategy is None:
        args.strategy = "fsdp" if args.ranks > 1 else "single"
    if args.activation_checkpointing is not None:
        args.activation_checkpointing = bool(args.activation_checkpointing)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --dry-run for the CPU self-check")
    if args.rank_out is not None:  # a rank started by launch()
        args.rank_out.write_text(json.dumps(rank_main(args)))
        return
    if args.ranks > 1:
        results = launch(sys.argv[1:], args.ranks)
    else:
        results = [rank_main(args)]
    r = results[0]
    print(json.dumps({k: v for k, v in r.items() if k != "estimate_parts"}, indent=1))
    if args.dry_run:  # the self-check: it ran, losses are finite, the estimate counts the LM
        assert all(x == x and x < 1e4 for res in results for x in res["losses"])  # type: ignore[attr-defined]
        assert r["built_lm_params"] == r["lm_params"], (r["built_lm_params"], r["lm_params"])
        # fp32 params + grads + AdamW moments of the LM on this rank: 16 bytes a parameter
        measured, est = int(r["measured_states_bytes"]), int(r["estimate_states_bytes"])  # type: ignore[call-overload]
        assert abs(measured - est) <= 0.1 * est, (measured, est)  # the adapter is ~4% more
        assert float(r["tokens_per_s_per_gpu"]) > 0  # type: ignore[arg-type]
        print("dry run ok")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
