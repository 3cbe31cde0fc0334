"""The paper's classifier: a small vision-language model asked two yes/no questions.

Web-SSL labelled its data with SmolVLM2 and the prompts below (DESIGN.md). Any image-text-to-
text model that transformers loads with ``AutoProcessor`` + ``AutoModelForImageTextToText``
from a local directory works (SmolVLM/SmolVLM2, Idefics3). Images go in batches, on the GPU
in bfloat16 when there is one. The answer is read twice: the greedy reply is parsed for a
leading yes/no (the paper's decision), and the first-step logits give a score
P(yes) / (P(yes) + P(no)) for the keep-list. A reply that is neither falls back to the score.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from webssl_cli.data.classifiers.base import VERSIONS
from webssl_cli.errors import UserError

VERSION = VERSIONS["vlm"]
PROMPTS = {
    "light": "Does this image contain any readable text? Answer only yes or no.",
    "heavy": (
        "Please think carefully before answering. Does this image contain charts, tables, "
        "or documents with readable text? Answer only yes or no."
    ),
}
_ANSWER = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def parse_answer(text: str) -> bool | None:
    """True for a reply that starts with yes, False for no, None for anything else."""
    m = _ANSWER.match(text.strip())
    return None if m is None else m.group(1).lower() == "yes"


def _word_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    """Token ids that begin each spelling of an answer word (with and without a leading space)."""
    ids: set[int] = set()
    for w in words:
        for form in (w, " " + w):
            toks = tokenizer.encode(form, add_special_tokens=False)
            if toks and toks[0] != tokenizer.unk_token_id:
                ids.add(int(toks[0]))
    return sorted(ids)


class VlmClassifier:
    name = "vlm"
    version = VERSION

    def __init__(self, path: str, batch_size: int = 16, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not Path(path).is_dir():
            raise UserError(
                f"--vlm-path: {path} is not a directory; give a local SmolVLM2-class model directory"
            )
        from webssl_cli.device import autocast_dtype, pick_device

        target = pick_device(device)
        self.device = str(target)
        self.amp = autocast_dtype(target)
        dtype = self.amp or torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.model = (
                AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
                .to(self.device)  # type: ignore[arg-type]
                .eval()
            )
        except (OSError, ValueError, ImportError) as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise UserError(
                f"--vlm-path: {path}: cannot load a vision-language model: {first}"
            ) from None
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # batched generation continues from the right edge
        self.yes_ids = _word_ids(tok, ("yes", "Yes", "YES"))
        self.no_ids = _word_ids(tok, ("no", "No", "NO"))
        if not self.yes_ids or not self.no_ids:
            raise UserError(f"--vlm-path: {path}: the tokenizer has no tokens for yes/no answers")
        self.batch_size = batch_size

    def prompt(self, filter: str) -> str:
        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": PROMPTS[filter]}],
            }
        ]
        text: str = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return text

    def _batch(self, images: list[np.ndarray], filter: str) -> list[tuple[float, bool]]:
        import torch
        from PIL import Image

        text = self.prompt(filter)
        inputs = self.processor(
            text=[text] * len(images),
            images=[[Image.fromarray(im)] for im in images],
            return_tensors="pt",
            padding=True,
        )
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        from webssl_cli.device import autocast

        with torch.inference_mode(), autocast(torch.device(self.device), self.amp):
            out = self.model.generate(
                **inputs,
                max_new_tokens=3,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        first = out.scores[0].float().softmax(-1)  # (B, vocab) at the first answer token
        p_yes = first[:, self.yes_ids].sum(-1)
        p_no = first[:, self.no_ids].sum(-1)
        score = (p_yes / (p_yes + p_no).clamp_min(1e-12)).cpu().tolist()
        new = out.sequences[:, inputs["input_ids"].shape[1] :]
        replies = self.processor.batch_decode(new, skip_special_tokens=True)
        self.last_replies = replies
        results = []
        for s, reply in zip(score, replies, strict=True):
            answer = parse_answer(reply)
            results.append((float(s), answer if answer is not None else s >= 0.5))
        return results

    def classify(
        self, images: list[np.ndarray], metas: list[dict[str, Any]], filter: str
    ) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        for i in range(0, len(images), self.batch_size):
            out.extend(self._batch(images[i : i + self.batch_size], filter))
        return out
