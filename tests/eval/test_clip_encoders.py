"""Released CLIP-family vision towers as reference encoders: tiny random CLIPVisionModel and
SiglipVisionModel directories, saved, loaded through ``load_encoder`` and probed with kNN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from webssl_cli.errors import UserError
from webssl_cli.eval.encoders import load_encoder
from webssl_cli.eval.run import run_eval

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8)  # fmt: skip


def _save(kind: str, out: Path) -> Any:
    import transformers as T

    torch.manual_seed(0)
    if kind == "clip":
        model = T.CLIPVisionModel(T.CLIPVisionConfig(**TINY)).eval()
    else:
        model = T.SiglipVisionModel(T.SiglipVisionConfig(**TINY)).eval()
    model.save_pretrained(str(out))
    return model


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_clip_family_tower_loads_and_matches_transformers(tmp_path: Path, kind: str) -> None:
    ref = _save(kind, tmp_path / kind)
    enc = load_encoder(tmp_path / kind)
    assert enc.width == 32 and enc.patch == 8
    assert enc.mean == ((0.5,) * 3 if kind == "siglip" else enc.mean) and enc.mean[0] != 0.485
    x = torch.randn(2, 3, 48, 48)  # another size than the config's: interpolated positions
    (cls, patches), = enc.blocks(x, 1)  # fmt: skip
    want = ref(pixel_values=x, interpolate_pos_encoding=True)
    n = 36
    assert patches.shape == (2, n, 32)
    if kind == "clip":  # CLIP's pooled output is the CLS token through post_layernorm
        torch.testing.assert_close(cls, want.pooler_output)
        torch.testing.assert_close(
            patches, getattr(ref, "vision_model", ref).post_layernorm(want.last_hidden_state[:, 1:])
        )
    else:  # SigLIP: the pooling head's output; last_hidden_state is already normed
        torch.testing.assert_close(cls, want.pooler_output)
        torch.testing.assert_close(patches, want.last_hidden_state)
    two = enc.blocks(x, 2)
    assert len(two) == 2 and two[1][0].shape == (2, 32)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_knn_runs_through_a_clip_family_tower(
    tmp_path: Path, kind: str, synth_shards: str, make_cell: Any
) -> None:
    _save(kind, tmp_path / kind)
    ev = {"task": "knn", "k": 5, "encoder": str(tmp_path / kind), "image_size": 32,
          "max_images": 120, "baselines": ["random-init"]}  # fmt: skip
    cell = make_cell(tmp_path, synth_shards, [ev])
    out = run_eval(cell, "knn")
    row = out["results"][0]
    assert out["settings"]["encoder"] == kind and 0.0 <= row["value"] <= 1.0
    assert "random-init" in out["details"]["baselines_skipped"]  # not a webssl checkpoint
    lines = (cell / "eval" / "knn.examples.jsonl").read_text().splitlines()
    assert len(lines) == out["details"]["n_val"]
    mean = sum(json.loads(x)["value"] for x in lines) / len(lines)
    assert abs(mean - row["value"]) < 1e-9


def test_a_foreign_model_type_is_a_user_error(tmp_path: Path) -> None:
    from webssl_cli.eval.encoders import load_hf_clip

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UserError, match="is not clip or siglip"):
        load_hf_clip(tmp_path / "m")
