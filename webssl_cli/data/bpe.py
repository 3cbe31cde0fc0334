"""An offline byte-level BPE tokenizer for captions, learnt from the training captions.

Text is lower-cased and whitespace-collapsed (as CLIP's tokenizer does), split into words of
letters, single digits or punctuation runs, each keeping its leading space (GPT-2's byte-level
convention, so no end-of-word symbols are needed). Ids 0..255 are the bytes, 256 and 257 the
start and end tokens, then one id per merge in the order they were learnt. Learning counts
adjacent pairs over the distinct words weighted by frequency and merges the most frequent
pair (ties: the smallest pair of ids) until the vocabulary reaches its target size or no pair
occurs twice; the result is a function of the captions' multiset alone.

A source's tokenizer is cached beside its shards as ``tokenizer-<key>.json`` (the key hashes
the shard list and the target size), written atomically; ``tokenizer_for`` builds it on first
use, so every process of a run reads the same file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.rundir import atomic_write_text

START, END = 256, 257
FIRST_MERGE = 258
_WORD = re.compile(r" ?[a-z]+| ?[0-9]| ?[^\sa-z0-9]+")
FORMAT = "webssl-bpe-1"


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def words_of(text: str) -> list[bytes]:
    return [w.encode("utf-8") for w in _WORD.findall(normalise(text))]


@dataclass
class BPETokenizer:
    merges: list[tuple[int, int]]
    """Pairs of ids in the order learnt; merge i makes id FIRST_MERGE + i."""
    _ranks: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)
    _cache: dict[bytes, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._ranks = {tuple(p): i for i, p in enumerate(self.merges)}  # type: ignore[misc]

    @property
    def vocab_size(self) -> int:
        return FIRST_MERGE + len(self.merges)

    def encode_word(self, word: bytes) -> list[int]:
        got = self._cache.get(word)
        if got is not None:
            return got
        ids = list(word)
        while len(ids) > 1:
            ranked = [
                (self._ranks.get(p, -1), i) for i, p in enumerate(zip(ids, ids[1:], strict=False))
            ]
            ranked = [(r, i) for r, i in ranked if r >= 0]
            if not ranked:
                break
            r, _ = min(ranked)
            out, i = [], 0
            while i < len(ids):  # apply merge r at every place, left to right
                if i + 1 < len(ids) and self._ranks.get((ids[i], ids[i + 1])) == r:
                    out.append(FIRST_MERGE + r)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start and end tokens."""
        return [t for w in words_of(text) for t in self.encode_word(w)]

    def decode(self, ids: Iterable[int]) -> str:
        table = self._bytes_table()
        return b"".join(table[i] for i in ids if i not in (START, END)).decode("utf-8", "replace")

    def _bytes_table(self) -> list[bytes]:
        table = [bytes([i]) for i in range(256)] + [b"", b""]
        for a, b in self.merges:
            table.append(table[a] + table[b])
        return table

    def batch(self, texts: Sequence[str | None], context_length: int) -> tuple[Any, Any]:
        """(tokens (N, context_length) int64, end (N,) int64): start + text + end, the text
        truncated to fit, zero-padded; ``end`` is the index of the end token. None -> an empty
        caption (start, end)."""
        import torch

        if context_length < 3:
            raise ValueError("context_length must hold a start, an end and one token")
        tokens = torch.zeros(len(texts), context_length, dtype=torch.int64)
        ends = torch.zeros(len(texts), dtype=torch.int64)
        for i, text in enumerate(texts):
            ids = [START, *self.encode(text or "")[: context_length - 2], END]
            tokens[i, : len(ids)] = torch.tensor(ids)
            ends[i] = len(ids) - 1
        return tokens, ends

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "merges": self.merges}, separators=(",", ":")) + "\n"

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def from_json(cls, text: str, where: str = "tokenizer") -> BPETokenizer:
        try:
            obj = json.loads(text)
            if obj.get("format") != FORMAT:
                raise ValueError(f"format is {obj.get('format')!r}, expected {FORMAT!r}")
            merges = [(int(a), int(b)) for a, b in obj["merges"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(
                f"{where}: not a webssl BPE tokenizer ({exc}); delete it to rebuild"
            ) from None
        for i, (a, b) in enumerate(merges):
            if (
                not (0 <= a < FIRST_MERGE + i and 0 <= b < FIRST_MERGE + i)
                or START in (a, b)
                or END in (a, b)
            ):
                raise UserError(f"{where}: merge {i} refers to an unknown id; delete it to rebuild")
        return cls(merges)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: unreadable tokenizer ({exc})") from None
        return cls.from_json(text, str(path))


def learn_bpe(captions: Iterable[str], vocab_size: int) -> BPETokenizer:
    """Learn merges from ``captions`` until ``vocab_size`` ids or no pair occurs twice."""
    counts: Counter[bytes] = Counter(w for c in captions for w in words_of(c))
    words = [(list(w), n) for w, n in sorted(counts.items())]
    merges: list[tuple[int, int]] = []
    while FIRST_MERGE + len(merges) < vocab_size:
        pairs: Counter[tuple[int, int]] = Counter()
        for ids, n in words:
            for p in zip(ids, ids[1:], strict=False):
                pairs[p] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        if best[1] < 2:
            break
        (a, b), new = best[0], FIRST_MERGE + len(merges)
        merges.append((a, b))
        for k, (ids, n) in enumerate(words):
            if len(ids) < 2:
                continue
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            words[k] = (out, n)
    return BPETokenizer(merges)


def source_captions(urls: Sequence[str]) -> list[str]:
    """Every caption of the shards ``urls`` (in file order; bad samples skipped)."""
    from webssl_cli.data.captions import caption_of
    from webssl_cli.data.stream import read_shard

    out: list[str] = []
    problems: Counter[str] = Counter()
    for url in urls:
        for _, members in read_shard(url, problems):
            cap = caption_of(members)
            if cap is not None:
                out.append(cap)
    return out


def cache_path(urls: Sequence[str], vocab_size: int) -> Path | None:
    """Where the tokenizer of ``urls`` is cached: beside the first local shard (None for
    ``pipe:`` sources, whose tokenizer is rebuilt by each run into its own directory)."""
    local = [u[7:] if u.startswith("file://") else u for u in urls if not u.startswith("pipe:")]
    if not local:
        return None
    key = hashlib.sha256(json.dumps([sorted(urls), vocab_size]).encode()).hexdigest()[:16]
    return Path(local[0]).parent / f"tokenizer-{key}.json"


def tokenizer_for(
    urls: Sequence[str], vocab_size: int, fallback_dir: Path | None = None
) -> tuple[BPETokenizer, Path | None]:
    """The tokenizer of a source: read from its cache, else learnt from its captions and
    cached (beside the shards, or in ``fallback_dir`` when that directory is not writable)."""
    path = cache_path(urls, vocab_size)
    if path is not None and path.exists():
        return BPETokenizer.load(path), path
    captions = source_captions(urls)
    if not captions:
        raise UserError(
            f"data.shards: no sample of {len(urls)} shards has a caption (.txt, .caption or a "
            "JSON caption field); CLIP trains on image-caption pairs"
        )
    tok = learn_bpe(captions, vocab_size)
    for where in (path, fallback_dir / "tokenizer.json" if fallback_dir else None):
        if where is None:
            continue
        try:
            tok.save(where)
            return tok, where
        except OSError:
            continue
    return tok, None
