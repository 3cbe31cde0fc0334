import math

import torch

from webssl_cli.specs.train import HeadConfig
from webssl_cli.train import losses as L
from webssl_cli.train.heads import DINOHead


def test_sinkhorn_rows_and_columns():
    torch.manual_seed(0)
    logits = torch.randn(12, 5) * 0.1
    q = L.sinkhorn_knopp(logits, temp=0.1, iters=50)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(12), atol=1e-5, rtol=0)  # each sample: 1
    torch.testing.assert_close(
        q.sum(dim=0), torch.full((5,), 12 / 5), atol=1e-3, rtol=0
    )  # equal use
    q3 = L.sinkhorn_knopp(logits, temp=0.1, iters=3)
    torch.testing.assert_close(q3.sum(dim=1), torch.ones(12), atol=1e-5, rtol=0)


def test_sinkhorn_reduce_hook_sees_global_batch():
    # Two "ranks" holding halves of a batch, with an all-reduce emulated over both halves,
    # give the same targets as one rank holding the whole batch.
    torch.manual_seed(1)
    logits = torch.randn(8, 6)
    whole = L.sinkhorn_knopp(logits, 0.2, 3)
    halves = logits.chunk(2)
    # Emulate all_reduce(sum): a reduce that adds the other rank's matching partial sum.
    # Run both ranks in lockstep by computing each partial from its own half.
    parts = [torch.exp(h / 0.2).t() for h in halves]
    k = 6
    b = 8.0
    total = sum(p.sum() for p in parts)
    parts = [p / total for p in parts]
    for _ in range(3):
        rows = sum(p.sum(dim=1, keepdim=True) for p in parts)
        parts = [p / rows / k for p in parts]
        parts = [p / p.sum(dim=0, keepdim=True) / b for p in parts]
    ref = torch.cat([p.t() * b for p in parts])
    torch.testing.assert_close(whole, ref)


def test_dino_loss_at_uniform_outputs_is_log_k():
    K = 7
    student = torch.zeros(4, 3, K)  # 2 global + 2 local crops, batch 3
    teacher = torch.full((2, 3, K), 1 / K)
    assert abs(float(L.dino_loss(student, teacher, 0.1)) - math.log(K)) < 1e-5


def test_dino_loss_skips_same_view_pairs_hand_checked():
    K = 3
    s = torch.log(torch.tensor([[[0.7, 0.2, 0.1]], [[0.1, 0.1, 0.8]]]))  # (2 global, B=1, K)
    t = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]])
    # student temp 1: crop0 vs teacher1 -> -log 0.1 ; crop1 vs teacher0 -> -log 0.1
    expected = (-math.log(0.1) - math.log(0.1)) / 2
    assert abs(float(L.dino_loss(s, t, 1.0)) - expected) < 1e-5
    assert K == 3


def test_ibot_loss_uniform_and_weighting():
    K = 5
    m = 6
    student = torch.zeros(m, K)
    teacher = torch.full((m, K), 1 / K)
    weights = torch.tensor([0.5, 0.5, 0.25, 0.25, 0.25, 0.25])  # 2 images: 2 and 4 masked tokens
    assert abs(float(L.ibot_loss(student, teacher, weights, 2, 0.1)) - math.log(K)) < 1e-5
    # Four global crops of which two unmasked: divided by all images, as DINOv2 does.
    assert abs(float(L.ibot_loss(student, teacher, weights, 4, 0.1)) - math.log(K) / 2) < 1e-5
    assert float(L.ibot_loss(torch.zeros(0, K), torch.zeros(0, K), torch.zeros(0), 4, 0.1)) == 0.0


def test_koleo_finite_on_duplicates_and_hand_checked():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = L.koleo_loss(x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # neighbours at distance sqrt(2)
    assert abs(float(L.koleo_loss(y)) + math.log(math.sqrt(2))) < 1e-4


def test_ema_center():
    c = torch.zeros(1, 3)
    logits = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    new = L.updated_center(c, logits, 0.9)
    torch.testing.assert_close(new, torch.tensor([[0.2, 0.2, 0.2]]))
    p = L.softmax_center(logits, new, 1.0)
    torch.testing.assert_close(p.sum(-1), torch.ones(2))


def test_gradients_flow_only_to_student():
    torch.manual_seed(0)
    cfg = HeadConfig(n_prototypes=16, bottleneck=8, hidden=16)
    student, teacher = DINOHead(12, cfg), DINOHead(12, cfg)
    x = torch.randn(2, 4, 12)
    with torch.no_grad():
        t = L.sinkhorn_knopp(teacher(x[:2].reshape(-1, 12)), 0.04).view(2, 4, -1)
    loss = L.dino_loss(student(x), t, 0.1)
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert torch.allclose(student.last_layer.weight_g, torch.ones(16, 1))


def test_head_param_counts_match_registry():
    from webssl_cli.specs.registry import head_params

    for cfg in (HeadConfig(), HeadConfig(n_prototypes=64, bottleneck=16, hidden=32, layers=1)):
        head = DINOHead(1024, cfg).to("meta")
        n = sum(p.numel() for p in head.parameters())
        assert n == head_params(1024, cfg.hidden, cfg.bottleneck, cfg.n_prototypes, cfg.layers)
