import numpy as np
import pytest

from webssl_cli.data.classifiers import make_classifier
from webssl_cli.data.classifiers.vlm import PROMPTS, parse_answer
from webssl_cli.data.shards import decode_image, iter_shards
from webssl_cli.data.synth import synthesize
from webssl_cli.errors import UserError


def test_label_classifier():
    clf = make_classifier("label")
    metas = [{"has_text": True, "is_chart_or_document": False}, {}]
    assert clf.classify([None, None], metas, "light") == [(1.0, True), (0.0, False)]
    assert clf.classify([None, None], metas, "heavy") == [(0.0, False), (0.0, False)]


def test_ocr_classifier_on_a_small_corpus(tmp_path):
    pytest.importorskip("rapidocr_onnxruntime")
    paths = synthesize(tmp_path, n=24, seed=11, shard_size=24, image_size=224,
                       mix="natural=1,scene_text=1,document=1,chart=1")  # fmt: skip
    samples = [(s.meta(), decode_image(s.image_bytes)) for s in iter_shards(paths)]
    clf = make_classifier("ocr")
    images, metas = [im for _, im in samples], [m for m, _ in samples]
    light = clf.classify(images, metas, "light")
    heavy = clf.classify(images, metas, "heavy")
    light_ok = np.mean([keep == m["has_text"] for (_, keep), m in zip(light, metas, strict=True)])
    heavy_ok = np.mean(
        [keep == m["is_chart_or_document"] for (_, keep), m in zip(heavy, metas, strict=True)]
    )
    assert light_ok >= 0.9 and heavy_ok >= 0.9, (light_ok, heavy_ok)
    # Scores are monotone evidence: documents outscore natural images.
    doc = [s for (s, _), m in zip(heavy, metas, strict=True) if m["kind"] == "document"]
    nat = [s for (s, _), m in zip(heavy, metas, strict=True) if m["kind"] == "natural"]
    assert min(doc) > max(nat)


def test_ocr_does_not_upscale_small_images():
    pytest.importorskip("rapidocr_onnxruntime")
    from webssl_cli.data.classifiers.ocr import TextDetector

    det = TextDetector()
    assert det(np.zeros((100, 60, 3), np.uint8)).shape == (96, 64)
    assert det(np.zeros((960, 720, 3), np.uint8)).shape == (480, 352)


@pytest.mark.parametrize(
    ("reply", "want"),
    [
        ("yes", True),
        (" Yes.", True),
        ("NO", False),
        ("no, it does not", False),
        ("yesterday", None),
        ("maybe", None),
        ("", None),
    ],
)
def test_parse_answer(reply, want):
    assert parse_answer(reply) is want


def build_tiny_vlm(path):
    """A randomly initialised Idefics3 (SmolVLM architecture) with a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    text = " ".join(PROMPTS.values())
    for p in "?.,":
        text = text.replace(p, f" {p} ")
    words = sorted(set(text.split()) | {"yes", "no", "User", "Assistant", ":"})
    special = [
        "<unk>",
        "<pad>",
        "<s>",
        "</s>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<end_of_utterance>",
    ]
    special += [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    vocab = {t: i for i, t in enumerate(special + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=special[4:],
    )  # fmt: skip
    template = (
        "{% for m in messages %}{{ m['role'] | capitalize }} :{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %} <image>{% else %} "
        "{{ c['text'] | replace('?', ' ?') | replace('.', ' .') | replace(',', ' ,') }}{% endif %}"
        "{% endfor %} <end_of_utterance>{% endfor %}{% if add_generation_prompt %} Assistant :{% endif %}"
    )
    ip = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    Idefics3Processor(
        image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=template
    ).save_pretrained(path)
    small = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    cfg = Idefics3Config(
        vision_config={**small, "image_size": 32, "patch_size": 8},
        text_config={**small, "model_type": "llama", "num_key_value_heads": 2, "vocab_size": len(vocab),
                     "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 3},
        scale_factor=2, image_token_id=vocab["<image>"], pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(cfg).save_pretrained(path)
    return vocab


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny-vlm")
    vocab = build_tiny_vlm(path)
    return str(path), vocab


def _force(clf, vocab, word):
    """Make the model answer ``word`` whatever it sees: a zero lm_head with a bias on one token."""
    import torch

    head = clf.model.lm_head
    forced = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        forced.weight.zero_()
        forced.bias.zero_()
        forced.bias[vocab[word]] = 10.0
    clf.model.lm_head = forced


def test_vlm_plumbing_prompts_batches_and_answers(tiny_vlm):
    from webssl_cli.data.classifiers.vlm import VlmClassifier

    path, vocab = tiny_vlm
    clf = VlmClassifier(path, batch_size=2)
    assert "Does this image contain any readable text ? Answer only yes or no ." in clf.prompt(
        "light"
    )
    assert "Please think carefully before answering ." in clf.prompt("heavy")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(5)]
    out = clf.classify(images, [{}] * 5, "light")  # random weights: any answer, right shapes
    assert len(out) == 5 and all(0.0 <= s <= 1.0 and isinstance(k, bool) for s, k in out)
    _force(clf, vocab, "yes")
    out = clf.classify(images, [{}] * 5, "heavy")
    assert all(k and s > 0.99 for s, k in out) and clf.last_replies[0].startswith("yes")
    _force(clf, vocab, "no")
    assert all(not k and s < 0.01 for s, k in clf.classify(images, [{}] * 5, "light"))


def test_vlm_filter_end_to_end_and_bad_path(tiny_vlm, tmp_path):
    from webssl_cli.data.filtering import run_filter_shards

    path, _ = tiny_vlm
    synthesize(tmp_path / "src", n=6, seed=1, shard_size=3, image_size=48)
    res = run_filter_shards(str(tmp_path / "src"), "heavy", "vlm", tmp_path / "f", vlm_path=path)
    assert res["complete"] and res["stats"]["total"] == 6 and res["stats"]["classifier"] == "vlm"
    with pytest.raises(UserError, match="not a directory"):
        make_classifier("vlm", vlm_path=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="cannot load"):
        make_classifier("vlm", vlm_path=str(tmp_path))
