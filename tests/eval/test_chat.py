"""Conversations through a Llama-3-style chat template: token layout, visual slots, loss masks,
multi-turn and text-only samples, and the loss of a tiny MLLM on them."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from webssl_cli.eval.chat import IGNORE, Conversation, chat_loss, encode, layout  # noqa: E402

# Llama-3 Instruct's layout: begin_of_text, then per message a role header, the text, eot.
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[PAD]"]


def llama3_tokenizer(template: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words = "system user assistant what colour is it red and the shape circle be brief hi"
    tok.train_from_iterator([words], trainers.WordLevelTrainer(special_tokens=["[UNK]", *SPECIAL]))
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
        pad_token="[PAD]", unk_token="[UNK]",
    )  # fmt: skip
    if template:
        out.chat_template = LLAMA3
    return out


def _tokens(tok, ids):
    return [tok.convert_ids_to_tokens(i) for i in ids]


def test_llama3_layout_image_in_place_and_loss_on_assistant_turns():
    tok = llama3_tokenizer()
    conv = Conversation(
        (("system", "be brief"), ("user", "what colour is it"), ("assistant", "red"),
         ("user", "and the shape"), ("assistant", "circle")),
        image="img0",
    )  # fmt: skip
    enc = encode(tok, conv, n_image=3)
    B, S, E, T = "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
    V = "<vis>"
    toks = _tokens(tok, enc.ids)
    toks = [V if img else t for t, img in zip(toks, enc.image, strict=True)]
    assert toks == [
        B, S, "system", E, "be", "brief", T,
        S, "user", E, V, V, V, "what", "colour", "is", "it", T,
        S, "assistant", E, "red", T,
        S, "user", E, "and", "the", "shape", T,
        S, "assistant", E, "circle", T,
    ]  # fmt: skip
    trained = [t for t, lab in zip(_tokens(tok, enc.ids), enc.labels, strict=True) if lab != IGNORE]
    assert trained == ["red", T, "circle", T]  # both assistant turns, each with its eot
    assert all(lab in (IGNORE, i) for lab, i in zip(enc.labels, enc.ids, strict=True))


def test_explicit_image_marker_text_only_and_generation_prompt():
    tok = llama3_tokenizer()
    marked = encode(
        tok, Conversation((("user", "what colour <image> is it"),), "k"), 2, generate=True
    )
    toks = _tokens(tok, marked.ids)
    assert sum(marked.image) == 2 and toks[marked.image.index(True) - 1] == "colour"
    assert toks[-3:] == ["<|start_header_id|>", "assistant", "<|end_header_id|>"]
    assert all(lab == IGNORE for lab in marked.labels)
    text = encode(tok, Conversation.qa(None, "hi", "red"), 5)
    assert not any(text.image)  # no image: no visual slots at all
    assert [t for t, lab in zip(_tokens(tok, text.ids), text.labels, strict=True)
            if lab != IGNORE] == ["red", "<|eot_id|>"]  # fmt: skip


def test_no_template_falls_back_to_plain_layout():
    tok = llama3_tokenizer(template=False)
    enc = encode(tok, Conversation.qa("k", "what colour is it", "red"), 2)
    assert _tokens(tok, enc.ids) == ["<|begin_of_text|>", "[PAD]", "[PAD]", "what", "colour",
                                     "is", "it", "[UNK]", "red", "<|eot_id|>"]  # fmt: skip
    assert enc.image[1:3] == [True, True] and sum(enc.image) == 2
    assert [lab != IGNORE for lab in enc.labels] == [False] * 8 + [True, True]


def test_unstable_template_refused():
    tok = llama3_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{{ messages | length }}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(ValueError, match="prefix-stable"):
        encode(tok, Conversation((("user", "hi"), ("assistant", "red"), ("user", "hi"),
                                  ("assistant", "red"))), 1)  # fmt: skip


def test_mixed_batch_loss_counts_only_assistant_tokens():
    from webssl_cli.eval.mllm import MLLM, tiny_llama

    torch.manual_seed(0)
    tok = llama3_tokenizer()
    model = MLLM(tiny_llama(len(tok), 16, 1, 2, 64), tok, vis_dim=6, tokens=4)
    convs = [
        Conversation.qa("a", "what colour is it", "red"),
        Conversation.qa(None, "hi", "circle"),
    ]
    batch = [encode(tok, c, 4) for c in convs]
    patches = [torch.randn(9, 6), None]
    emb, mask, lab = layout(model, batch, patches, left_pad=False)
    assert emb.shape[:2] == mask.shape == lab.shape
    # the image row's visual slots hold the adapter's output, the text-only row has none
    vis = model.adapter(torch.nn.functional.interpolate(
        patches[0].T[None].reshape(1, 6, 3, 3), size=(2, 2), mode="bilinear",
        align_corners=False).flatten(2).transpose(1, 2))[0]  # fmt: skip
    slots = torch.tensor(batch[0].image)
    assert torch.allclose(emb[0, : len(slots)][slots], vis, atol=1e-6)
    loss = chat_loss(model, batch, patches)
    loss.backward()
    assert torch.isfinite(loss) and model.adapter.net[0].weight.grad is not None
    # changing a non-assistant token's target leaves the loss unchanged
    lab2 = [encode(tok, c, 4) for c in convs]
    lab2[1].labels = [IGNORE] * len(lab2[1].labels)
    only_first = chat_loss(model, lab2[:1] + lab2[1:], patches)
    assert not torch.isclose(only_first, loss)


def test_plain_layout_matches_mllm():
    from webssl_cli.eval.mllm import MLLM, tiny_llama

    torch.manual_seed(0)
    tok = llama3_tokenizer(template=False)
    model = MLLM(tiny_llama(len(tok), 16, 1, 2, 64), tok, vis_dim=6, tokens=4)
    patches = torch.randn(2, 9, 6)
    qs, ans = ["what colour is it", "and the shape"], ["red", "circle"]
    ref = model._layout(patches, qs, ans, left_pad=False)
    got = layout(model, [encode(tok, Conversation.qa("k", q, a), 4) for q, a in zip(qs, ans, strict=True)],
                 list(patches), left_pad=False)  # fmt: skip
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a, b)


def test_vqa_eval_uses_a_local_lms_chat_template(
    tmp_path, synth_shards: str, make_cell, monkeypatch
) -> None:
    """A local transformers LM whose tokenizer has a Llama-3-style template: both stages train
    on templated conversations and the answers come from the templated prompt."""
    from webssl_cli.eval import mllm_dist, vqa_train
    from webssl_cli.eval.mllm import tiny_llama
    from webssl_cli.eval.run import run_eval
    from webssl_cli.eval.tokenizer import train_word_tokenizer

    tok = train_word_tokenizer(["what colour shape is the red green blue circle square answer"])
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:4]})
    tok.bos_token, tok.eos_token = "[BOS]", "<|eot_id|>"
    tok.chat_template = LLAMA3
    lm_dir = tmp_path / "lm"
    tok.save_pretrained(str(lm_dir))
    torch.manual_seed(0)
    tiny_llama(len(tok), 32, 1, 2, 64).save_pretrained(str(lm_dir))
    calls = {"train": 0, "generate": 0}
    layouts: set[bool] = set()  # the ``template`` of every training sequence's encoding
    real_train, real_gen = vqa_train.train_stage, vqa_train.chat_generate
    real_encode = mllm_dist.encode

    def train(*a, **k):
        calls["train"] += 1
        return real_train(*a, **k)

    def gen(*a, **k):
        calls["generate"] += 1
        return real_gen(*a, **k)

    def encode(*a, **k):
        layouts.add(k.get("template", True))
        return real_encode(*a, **k)

    monkeypatch.setattr(vqa_train, "train_stage", train)
    monkeypatch.setattr(vqa_train, "chat_generate", gen)
    monkeypatch.setattr(mllm_dist, "encode", encode)
    tiny = {"task": "vqa", "llm": str(lm_dir), "tokens": 4, "stage1_steps": 2, "stage1_batch": 8,
            "stage2_steps": 3, "stage2_batch": 8, "max_questions": 2, "max_new_tokens": 3,
            "batch_size": 8, "max_images": 60}  # fmt: skip
    cell = make_cell(
        tmp_path, synth_shards, [tiny, {**tiny, "name": "plain", "chat_template": False}]
    )
    out = run_eval(cell, "vqa")
    assert calls["train"] == 3  # encoder: stages 1 and 2; blind twin: stage 2
    assert calls["generate"] >= 2  # encoder and blind
    assert out["details"]["losses"]["stage2"] is not None
    assert layouts == {True}
    # chat_template: false trains and answers in the plain layout although the LM has one
    layouts.clear()
    calls["generate"] = 0
    run_eval(cell, "plain")
    assert layouts == {False} and calls["generate"] == 0
