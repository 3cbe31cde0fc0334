"""One rank of a tiny stage-2 run (tests): ``python mllm_dist_worker.py OUT STRATEGY [KILL_AT]``
with torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) in the environment.
Rank 0 writes the losses of every step to OUT/losses.json; KILL_AT SIGKILLs every rank right
after that step (no cleanup: what a preempted job sees)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch


def conversations():
    """Multi-turn conversations about 12 images, and text-only ones (no image)."""
    from webssl_cli.eval.chat import Conversation

    colours, shapes = ["red", "green", "blue"], ["circle", "square"]
    out = []
    for i in range(12):
        out.append(Conversation(
            (("user", "what colour is it"), ("assistant", colours[i % 3]),
             ("user", "and the shape"), ("assistant", shapes[i % 2])),
            image=f"img{i}",
        ))  # fmt: skip
    for i in range(4):
        out.append(Conversation.qa(None, "say a colour", colours[i % 3]))
    return out


def main() -> None:
    out, strategy = Path(sys.argv[1]), sys.argv[2]
    kill_at = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    torch.set_num_threads(1)
    from webssl_cli.eval.mllm import MLLM, tiny_llama
    from webssl_cli.eval.mllm_dist import full_state, train_stage2
    from webssl_cli.eval.tokenizer import train_word_tokenizer
    from webssl_cli.train import distributed as D

    env = D.detect_env()
    D.init_process_group(env, torch.device("cpu"))
    convs = conversations()
    tok = train_word_tokenizer(" ".join(t for c in convs for _, t in c.turns).split())
    torch.manual_seed(0)
    model = MLLM(tiny_llama(len(tok), 32, 2, 2, 64), tok, vis_dim=8, tokens=4)
    g = torch.Generator().manual_seed(1)
    feats = {f"img{i}": torch.randn(9, 8, generator=g) for i in range(12)}

    def log(step: int, loss: float) -> None:
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    root, losses = train_stage2(
        model, convs, feats, lr=3e-3, batch=8, steps=10, seed=0, strategy=strategy,
        activation_checkpointing=True, checkpoint_dir=out / "ckpt", checkpoint_every=3, log=log,
    )  # fmt: skip
    state = full_state(root)
    if env.rank == 0:
        norm = float(sum(v.double().norm() ** 2 for v in state.values()) ** 0.5)
        (out / "losses.json").write_text(json.dumps({"losses": losses, "norm": norm}))


if __name__ == "__main__":
    main()
