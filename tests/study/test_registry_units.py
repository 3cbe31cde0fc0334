from __future__ import annotations

import pytest

from webssl_cli.errors import UserError
from webssl_cli.specs.registry import MODELS, get_model, swiglu_hidden
from webssl_cli.specs.units import format_count, parse_count

# DESIGN.md's table: name -> (width, depth, heads, SwiGLU hidden, params in billions)
PAPER = {
    "webdino-300m": (1024, 24, 16, 2736, 0.30),
    "webdino-1b": (1536, 40, 24, 4096, 1.13),
    "webdino-2b": (2688, 24, 21, 7168, 2.08),
    "webdino-3b": (3072, 26, 24, 8192, 2.95),
    "webdino-5b": (3584, 32, 28, 9560, 4.94),
    "webdino-7b": (4096, 32, 32, 10928, 6.45),
}


@pytest.mark.parametrize("name", list(PAPER))
def test_webdino_sizes_match_the_paper(name: str) -> None:
    width, depth, heads, hidden, billions = PAPER[name]
    m = MODELS[name]
    assert (m.width, m.depth, m.heads, m.ffn_hidden, m.patch) == (width, depth, heads, hidden, 14)
    assert swiglu_hidden(width) == hidden
    # Within 1%, or within the rounding of the table's last printed digit (0.30B is 2 digits:
    # ViT-L/14 has 304M parameters, as in DINOv2).
    assert abs(m.backbone_params() - billions * 1e9) <= max(0.01 * billions * 1e9, 0.005e9)


def test_small_sizes_exist_and_divide_heads() -> None:
    for m in MODELS.values():
        assert m.width % m.heads == 0, m.name
    assert get_model("vit-small").backbone_params() == pytest.approx(22e6, rel=0.03)
    assert get_model("vit-base").backbone_params() == pytest.approx(86.6e6, rel=0.03)


def test_cpu_sizes_grow_and_match_their_descriptions() -> None:
    # The CPU scaling ladder: each size larger than the one before, and the count in each
    # description (what `webssl models` shows) is the analytic one, to the printed digit.
    ladder = ["vit-pico", "vit-nano", "vit-micro", "vit-mini", "vit-small"]
    params = [get_model(n).backbone_params() for n in ladder]
    assert params == sorted(params) and len(set(params)) == len(params)
    for name, printed in [("vit-micro", 1.2e6), ("vit-mini", 2.7e6)]:
        assert get_model(name).backbone_params() == pytest.approx(printed, abs=0.05e6)


def test_aliases_and_unknown_model() -> None:
    assert get_model("7B").name == "webdino-7b"
    assert get_model("vit-g").name == "webdino-1b"
    with pytest.raises(
        UserError, match=r"unknown model 'vit-hug'.*valid: webdino-300m, webdino-1b"
    ):
        get_model("vit-hug")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500M", 500_000_000),
        ("2B", 2_000_000_000),
        ("2e9", 2_000_000_000),
        ("1_000", 1000),
        ("1.5K", 1500),
        (64, 64),
        (2e9, 2_000_000_000),
        ("20k", 20_000),
    ],
)
def test_parse_count(text: object, value: int) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize(
    "bad", ["0", "-5", "abc", "2X", "1.5", 0, -1, True, None, float("inf"), "", [1]]
)
def test_parse_count_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_count(bad)


def test_format_count() -> None:
    assert format_count(2_000_000_000) == "2B"
    assert format_count(1_500_000) == "1.5M"
    assert format_count(640) == "640"
