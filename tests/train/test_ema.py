"""The teacher's EMA update: m * teacher + (1 - m) * student, in one pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from webssl_cli.train.ema import ema_update


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(7, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    teacher = nn.Sequential(nn.Linear(7, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_()
    return teacher.requires_grad_(False), student


@pytest.mark.parametrize("momentum", [0.994, 0.5, 0.1])
def test_ema_update_is_the_momentum_average(momentum: float) -> None:
    teacher, student = _pair()
    expected = [momentum * t + (1 - momentum) * s
                for t, s in zip(teacher.parameters(), student.parameters(), strict=True)]  # fmt: skip
    ema_update(teacher, student, momentum)
    for got, want in zip(teacher.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_momentum_one_keeps_the_teacher_and_zero_copies_the_student() -> None:
    teacher, student = _pair()
    before = [t.clone() for t in teacher.parameters()]
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(t, b) for t, b in zip(teacher.parameters(), before, strict=True))
    ema_update(teacher, student, 0.0)
    assert all(
        torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters(), strict=True)
    )
    assert all(p.grad is None for p in student.parameters())


def test_mismatched_parameter_lists_are_refused() -> None:
    teacher, student = _pair()
    with pytest.raises(ValueError, match="different parameter lists"):
        ema_update(teacher, nn.Linear(7, 5), 0.9)
