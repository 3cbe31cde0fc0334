"""Pricing the VQA evaluation: LM sizes from config.json, placement, GPU-hours, memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webssl_cli.specs.evals import VqaEval
from webssl_cli.study.vqa_cost import lm_shape, price_vqa

# Llama-3 8B Instruct's config.json (the fields the estimate reads)
LLAMA3_8B = {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
             "tie_word_embeddings": False}  # fmt: skip


def _llama(tmp_path: Path) -> VqaEval:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    return VqaEval(llm=str(tmp_path), stage1_samples=1_200_000, stage2_samples=7_000_000)


def test_llama3_8b_params_and_placement(tmp_path: Path):
    cfg = _llama(tmp_path)
    shape = lm_shape(cfg)
    assert shape is not None
    # by hand: per layer q,o 4096^2 each, k,v 4096x1024 each, MLP 3x4096x14336, two norms
    layer = 2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert shape.params == 32 * layer + 2 * 128256 * 4096 + 4096  # 8,030,261,248
    eight = price_vqa(cfg, gpus=8, gpu_memory_gb=80, peak_tflops=989, mfu=0.4)
    assert eight["strategy"] == "fsdp" and eight["activation_checkpointing"] is True
    assert eight["memory"]["states"] == 16 * shape.params // 8
    assert eight["memory_fits"] is True
    one = price_vqa(cfg, gpus=1, gpu_memory_gb=80, peak_tflops=989, mfu=0.4)
    assert one["strategy"] == "single" and one["memory_fits"] is False  # 128 GB of states
    # stage 2: 7M examples x 832 tokens x 8 P (checkpointing) + attention, at 40% of 989 TFLOP/s
    s = 576 + 256
    flops = 7e6 * (8 * shape.params * s + 4 * 4 * 32 * s * s * 4096)
    assert eight["gpu_hours"]["stage2"] == pytest.approx(flops / (989e12 * 0.4 * 3600))
    # ~270 GPU-hours; LLaVA-1.5's 665k-example stage 2 of a 7B LM takes ~20 h on 8 A100s
    # (~160 A100-hours), i.e. ~10x more examples at ~3x the speed lands in this range
    assert 200 < eight["gpu_hours"]["stage2"] < 400
    assert eight["gpu_hours"]["features"] is None  # no encoder given


def test_tiny_lm_matches_the_built_model_and_unknowns():
    cfg = VqaEval(lm_width=32, lm_layers=2, lm_heads=2, stage2_steps=10, stage2_batch=8)
    shape = lm_shape(cfg)
    assert shape is not None
    transformers = pytest.importorskip("transformers")
    from webssl_cli.eval.mllm import tiny_llama

    lm = tiny_llama(shape.vocab, 32, 2, 2, 64)
    assert isinstance(lm, transformers.PreTrainedModel)
    assert shape.params == sum(p.numel() for p in lm.parameters())
    est = price_vqa(cfg, gpus=2, gpu_memory_gb=0, peak_tflops=1, mfu=1)
    assert est["strategy"] == "ddp" and est["memory_fits"] is None
    assert est["gpu_hours"]["stage1"] is None and est["gpu_hours"]["stage2"] is not None
    assert not price_vqa(VqaEval(llm="/nonexistent"), gpus=1, gpu_memory_gb=0, peak_tflops=1,
                         mfu=1)["priced"]  # fmt: skip
