"""One rank of a VQA evaluation (tests): ``python vqa_rank_worker.py CELL NAME LOG [KILL_AFTER]``
with the job's rank variables (torchrun's or SLURM's) in the environment. Rank 0 appends to LOG
one line per training stage ({"dir", "losses", "resumed_at"}); KILL_AFTER=N SIGKILLs every rank
right after the N-th stage-2 checkpoint of the encoder's MLLM (no cleanup: a preempted job)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main() -> None:
    import torch

    torch.set_num_threads(1)
    cell, name, log = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    kill_after = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    from webssl_cli.eval import mllm_dist as MD
    from webssl_cli.eval.run import run_eval
    from webssl_cli.eval.vqa_dist import job_rank

    lead = job_rank() == 0
    real_train, real_save, real_load = MD.train_stage2, MD._save, MD._load
    saves: list[int] = []
    loaded: dict[str, int] = {}

    def load(ckpt, root, opt):
        step, losses = real_load(ckpt, root, opt)
        loaded[str(ckpt)] = step
        return step, losses

    def save(ckpt, root, opt, step, losses):
        real_save(ckpt, root, opt, step, losses)
        if ckpt.name == "train-stage2" and ckpt.parent.name.endswith(".cache"):
            saves.append(step)
            if kill_after and len(saves) == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def train(*args, **kw):
        root, losses = real_train(*args, **kw)
        if lead:
            d = str(kw["checkpoint_dir"])
            with open(log, "a") as f:
                f.write(
                    json.dumps({"dir": d, "losses": losses, "resumed_at": loaded.get(d, 0)}) + "\n"
                )
        return root, losses

    MD.train_stage2, MD._save, MD._load = train, save, load
    run_eval(cell, name)


if __name__ == "__main__":
    main()
