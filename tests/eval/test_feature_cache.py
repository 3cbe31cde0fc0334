"""Sharded on-disk features: exact round trip in half precision, resume after a killed build,
and a synthetic MLLM run whose feature cache is larger than the address space it may grow by."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from webssl_cli.eval.feature_cache import FeatureCache, build_cache


def _feats(keys):
    out = []
    for k in keys:
        g = torch.Generator().manual_seed(int(k.split("-")[1]))
        out.append(torch.randn(6, 4, generator=g))
    return torch.stack(out)


def test_round_trip_fp16_and_bf16(tmp_path: Path):
    keys = [f"img-{i}" for i in range(11)]
    for dtype, half in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        cache = build_cache(tmp_path / dtype, keys, _feats, shard_size=4, dtype=dtype)
        assert len(cache) == 11 and list(cache) == keys and cache.nbytes == 11 * 6 * 4 * 2
        assert len(list((tmp_path / dtype).glob("shard-*.bin"))) == 3
        for k, ref in zip(keys, _feats(keys), strict=True):
            assert cache[k].dtype == torch.float32
            assert torch.equal(cache[k], ref.to(half).float())
        assert torch.equal(FeatureCache(tmp_path / dtype)["img-7"], cache["img-7"])


def test_killed_build_resumes_with_missing_shards_only(tmp_path: Path):
    keys = [f"img-{i}" for i in range(10)]
    computed: list[list[str]] = []

    def compute(ks):
        computed.append(list(ks))
        return _feats(ks)

    def die(shard):
        if shard == 1:
            raise KeyboardInterrupt  # the job is killed after its second shard

    with pytest.raises(KeyboardInterrupt):
        build_cache(tmp_path, keys, compute, shard_size=3, on_shard=die)
    (tmp_path / "shard-00002.tmp").write_bytes(b"torn")  # a half-written third shard
    computed.clear()
    cache = build_cache(tmp_path, keys, compute, shard_size=3)
    assert computed == [keys[6:9], keys[9:]]  # finished shards are not recomputed
    assert torch.equal(torch.stack([cache[k] for k in keys]), _feats(keys).half().float())
    # other keys: the cache is rebuilt from scratch
    computed.clear()
    build_cache(tmp_path, keys[:4], compute, shard_size=3)
    assert computed == [keys[:3], keys[3:4]]


# A child process: warm up (imports, one training step), then cap its address space at what it
# has plus MARGIN, then build a feature cache several times MARGIN and train both stages and
# answer on it. With ``memory`` it holds the features in a dict instead: that must not fit.
CHILD = textwrap.dedent(
    """
    import os, resource, sys, zlib
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from webssl_cli.eval.feature_cache import build_cache
    from webssl_cli.eval.mllm import MLLM, tiny_llama, train_stage
    from webssl_cli.eval.tokenizer import train_word_tokenizer

    root, mode, n, margin = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    COLOURS = ["red", "green", "blue", "white"]
    keys = [f"img{i:05d}" for i in range(n)]
    colour = {k: COLOURS[zlib.crc32(k.encode()) % 4] for k in keys}

    def encoder(ks):  # a frozen stand-in: 576 x 256 tokens carrying the image's colour
        out = torch.randn(len(ks), 576, 256) * 0.1
        for i, k in enumerate(ks):
            out[i, :, COLOURS.index(colour[k])] += 1.0
        return out

    examples = [(k, "what colour is it", colour[k]) for k in keys]
    tok = train_word_tokenizer([f"{p} answer: {a}" for _, p, a in examples])
    torch.manual_seed(0)
    model = MLLM(tiny_llama(len(tok), 32, 1, 2, 128), tok, vis_dim=256, tokens=16)
    warm = {k: encoder([k])[0] for k in keys[:8]}
    train_stage(model, examples[:8], warm, list(model.parameters()), lr=1e-3, batch=8, steps=1,
                seed=0)
    model.generate(torch.stack([warm[k] for k in keys[:8]]), ["what colour is it"] * 8, 2)
    del warm
    vm = next(int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + margin, vm + margin))
    if mode == "memory":
        feats = {}
        for s in range(0, n, 32):
            f = encoder(keys[s : s + 32]).half()
            feats.update(zip(keys[s : s + 32], f))
    else:
        feats = build_cache(Path(root) / "cache", keys, encoder, shard_size=32)
        assert feats.nbytes > 3 * margin, feats.nbytes
    train_stage(model, examples, feats, list(model.adapter.parameters()), lr=1e-3, batch=8,
                steps=20, seed=0)
    loss = train_stage(model, examples, feats, list(model.parameters()), lr=1e-3, batch=8,
                       steps=20, seed=1)
    answers = model.generate(torch.stack([feats[k] for k in keys[:8]]), ["what colour is it"] * 8, 2)
    print("DONE", feats.nbytes if mode != "memory" else -1, loss, answers)
    """
)


def _child(tmp_path: Path, mode: str, n: int, margin: int) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}
    return subprocess.run([sys.executable, str(script), str(tmp_path), mode, str(n), str(margin)],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_cache_larger_than_memory_limit_completes(tmp_path: Path):
    pytest.importorskip("transformers")
    margin, n = 64 * 2**20, 1024  # 1024 x 576 x 256 fp16 = 288 MiB of features, 4.5 x the margin
    run = _child(tmp_path, "cache", n, margin)
    assert run.returncode == 0 and "DONE" in run.stdout, run.stderr[-2000:]
    # the control: the same features held in memory do not fit under the same limit
    held = _child(tmp_path, "memory", n, margin)
    refused = "MemoryError" in held.stderr or "Cannot allocate memory" in held.stderr
    assert held.returncode != 0 and refused, (held.stdout, held.stderr[-800:])


TINY = {
    "task": "vqa", "tokens": 4, "lm_width": 32, "lm_layers": 1, "lm_heads": 2, "stage1_steps": 2,
    "stage1_batch": 8, "stage1_lr": 1e-3, "stage2_steps": 4, "stage2_batch": 8, "stage2_lr": 1e-3,
    "max_questions": 4, "max_new_tokens": 3, "batch_size": 8, "max_images": 120,
}  # fmt: skip


def test_vqa_eval_with_features_on_disk(tmp_path: Path, synth_shards: str, make_cell) -> None:
    pytest.importorskip("transformers")
    import json

    from webssl_cli.eval.run import run_eval

    cell = make_cell(
        tmp_path, synth_shards, [{**TINY, "feature_cache": "disk", "feature_shard": 16}]
    )
    out = run_eval(cell, "vqa")
    root = cell / "eval" / "vqa.cache" / "features"
    cache = FeatureCache(root)
    n = out["details"]["n_images"]
    assert len(cache) == n and len(list(root.glob("shard-*.done"))) == -(-n // 16)
    assert not (cell / "eval" / "vqa.cache" / "features.pt").exists()  # nothing held whole
    doc = json.loads((cell / "eval" / "vqa.json").read_text())
    assert all(0.0 <= r["value"] <= 1.0 for r in doc["results"])
    # a rerun reads the cache: the shards are not rewritten
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("shard-*.bin")}
    (cell / "eval" / "vqa.cache" / "predictions.jsonl").unlink()
    run_eval(cell, "vqa")
    assert {p: p.stat().st_mtime_ns for p in root.glob("shard-*.bin")} == stamps
