"""Captions of the synthetic corpus, the caption reader, the caption tokenizer, caption stats."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from webssl_cli.data import synth
from webssl_cli.data.bpe import END, START, BPETokenizer, learn_bpe, tokenizer_for
from webssl_cli.data.captions import NOISE, caption_of, make_caption
from webssl_cli.data.shards import iter_shards, write_shard
from webssl_cli.data.stats import format_stats, source_stats
from webssl_cli.errors import UserError

# sha256 of the image and JSON of a sample (seed 0, 96 px, default mix) at generator version 2
# (synth.GENERATOR_VERSION). Captions draw from a generator of their own: at version 1 these
# pins were taken before captions existed and held after they were added; a change here means
# a seed's images changed, which needs a new GENERATOR_VERSION.
BEFORE = {
    "s0_00000000": (
        "c0aa2dc50a9ff918588bc7489abc1fba25b478a41497cb37b0bd74e1eee283dc",
        "ead4b495211d21cab18684bd62578b234e3633acb60d0ffa1bdd8d8d8cb83965",
    ),
}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_captions_leave_images_and_labels_unchanged():
    assert synth.GENERATOR_VERSION == 2  # the version the pins below were taken at
    mix = synth.parse_mix(None)
    for key, (jpg, js) in BEFORE.items():
        _, members = synth.make_sample(0, int(key.split("_")[1]), 96, mix)
        assert (_sha(members["jpg"]), _sha(members["json"])) == (jpg, js)


def test_captions_are_byte_identical_per_seed_and_noisy(tmp_path):
    a = synth.synthesize(tmp_path / "a", n=400, seed=5, shard_size=200, image_size=48)
    b = synth.synthesize(tmp_path / "b", n=400, seed=5, shard_size=200, image_size=48)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    samples = list(iter_shards(a))
    caps = [caption_of(s.members) for s in samples]
    missing = sum(c is None for c in caps) / len(caps)
    assert abs(missing - NOISE["missing"]) < 0.05  # ~8% have none (binomial sd 1.4%)
    names = [json.loads(s.members["json"])["class_name"] for s in samples]
    named = sum(c is not None and n in c for c, n in zip(caps, names, strict=True)) / len(caps)
    assert 0.45 < named < 0.85  # most, not all, captions name the class
    assert len(set(c for c in caps if c)) > 150  # varied, not one template


def test_wrong_captions_name_another_class():
    meta = {"kind": "natural", "class": 3, "class_name": "star",
            "objects": [{"shape": "star", "color": "red"}]}  # fmt: skip
    seen = set()
    for i in range(2000):
        rng = np.random.default_rng([1, i, 7])
        if rng.random() < NOISE["missing"]:
            continue
        c = make_caption(meta, np.random.default_rng([1, i, 7]))
        seen.add(c)
    assert any(c and "star" in c and "red" in c for c in seen)
    assert any(c and "star" not in c and ("circle" in c or "chart" in c) for c in seen)


def test_caption_reader_reads_txt_caption_and_json():
    assert caption_of({"txt": b"  a red\n star "}) == "a red star"
    assert caption_of({"caption": "hello"}) == "hello"
    assert caption_of({"json": json.dumps({"caption": "from json"}).encode()}) == "from json"
    assert caption_of({"txt": b"   ", "json": b'{"caption": "fallback"}'}) == "fallback"
    assert caption_of({"txt": b"\xff\xfe"}) is None  # undecodable text counts as none
    assert caption_of({"json": b"not json"}) is None
    assert caption_of({"json": b'{"caption": 3}'}) is None
    assert caption_of({"jpg": b""}) is None


def test_bpe_round_trip_merges_and_truncation(tmp_path):
    caps = ["a red star", "a red circle", "a blue star on a plain background"] * 5
    tok = learn_bpe(caps, 1000)
    assert tok.vocab_size < 1000  # stops when no pair occurs twice
    for c in caps + ["UNSEEN wörds 42!"]:
        assert tok.decode(tok.encode(c)) == " ".join(c.lower().split())
    assert len(tok.encode("a red star")) == 3  # frequent words became single tokens
    assert learn_bpe(caps, 1000).merges == tok.merges  # deterministic
    assert learn_bpe(list(reversed(caps)), 1000).merges == tok.merges  # order-free
    small = learn_bpe(caps, 262)
    assert small.vocab_size == 262
    tokens, ends = tok.batch(["a red star", None, "x " * 50], context_length=6)
    assert tokens.shape == (3, 6)
    assert tokens[0, 0] == START and tokens[0, int(ends[0])] == END and int(ends[0]) == 4
    assert tokens[1, :2].tolist() == [START, END] and int(ends[1]) == 1
    assert int(ends[2]) == 5 and tokens[2, 5] == END  # truncated to fit the context
    path = tmp_path / "t.json"
    tok.save(path)
    assert BPETokenizer.load(path).merges == tok.merges
    path.write_text('{"format": "other"}')
    with pytest.raises(UserError, match="not a webssl BPE tokenizer"):
        BPETokenizer.load(path)


def test_tokenizer_is_cached_beside_the_shards(tmp_path):
    paths = synth.synthesize(tmp_path / "d", n=40, seed=1, shard_size=20, image_size=48)
    urls = [str(p) for p in paths]
    tok, where = tokenizer_for(urls, 600)
    assert where is not None and where.parent == paths[0].parent and where.exists()
    again, same = tokenizer_for(urls, 600)
    assert same == where and again.merges == tok.merges
    bare = write_shard(tmp_path / "bare" / "shard-000000.tar", [("k", {"jpg": b"x"})])
    with pytest.raises(UserError, match="no sample of 1 shards has a caption"):
        tokenizer_for([str(bare)], 600)


def test_stats_report_caption_coverage(tmp_path):
    paths = synth.synthesize(tmp_path, n=50, seed=2, shard_size=50, image_size=48)
    st = source_stats(str(paths[0]), decode=False)
    caps = [caption_of(s.members) for s in iter_shards(paths)]
    with_ = sum(c is not None for c in caps)
    assert st["captions"]["with"] == with_ and st["captions"]["without"] == 50 - with_
    assert st["captions"]["coverage"] == pytest.approx(with_ / 50)
    assert f"captions {with_} of 50 samples" in format_stats(st)


def test_data_tokenizer_command_caches_what_training_reads(tmp_path):
    from typer.testing import CliRunner

    from webssl_cli.cli import app
    from webssl_cli.data.stream import expand_urls

    paths = synth.synthesize(tmp_path, n=30, seed=3, shard_size=15, image_size=48)
    pattern = synth.shard_pattern(paths)
    res = CliRunner().invoke(app, ["data", "tokenizer", pattern, "--vocab-size", "500"])
    assert res.exit_code == 0, res.output
    tok, where = tokenizer_for(expand_urls(pattern), 500)  # what a CLIP cell's run does
    assert where is not None and str(where) in res.output and f"{tok.vocab_size} ids" in res.output
    bad = CliRunner().invoke(app, ["data", "tokenizer", pattern, "--vocab-size", "10"])
    assert bad.exit_code == 2 and "--vocab-size" in bad.output
