"""A word-level tokenizer trained on the fly for the tiny language model.

Lower-cased, split on whitespace (so "3.5", "2025-06-10" and "A." stay single tokens); words
seen fewer than ``min_freq`` times map to [UNK]. Wrapped in ``PreTrainedTokenizerFast`` so
the tiny LM and a local Hugging Face LM go through the same calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "<image>"]


def train_word_tokenizer(texts: Iterable[str], min_freq: int = 1) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=min_freq)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )
