import math

import pytest
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


def _official_sinkhorn(logits, temp, iters=3, dtype=torch.float32):
    """DINOv2's sinkhorn_knopp_teacher transcribed for one process: exp(logits / temp) directly,
    then the alternating normalisations."""
    q = torch.exp(logits.to(dtype) / temp).t()
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def _cosine_logits(b, k, scale=1.0, seed=0):
    """Logits as the heads make them: unit features against unit prototypes, in [-1, 1]; each
    feature lies near a prototype, as after training (cosines up to ~1)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.functional.normalize(torch.randn(k, 32, generator=g), dim=-1)
    near = w[torch.randint(0, k, (b,), generator=g)]
    x = torch.nn.functional.normalize(near + 0.03 * torch.randn(b, 32, generator=g), dim=-1)
    return (x @ w.t()) * scale


def _relative_error(got, ref):
    return ((got.double() - ref.double()).abs() / ref.double().abs()).max().item()


def test_sinkhorn_matches_dinov2_formula_on_normal_logits():
    cases = [
        (16, 4096, 1.0, 0.04),
        (64, 1024, 1.0, 0.07),
        (200, 8192, 0.3, 0.04),
        (12, 5, 0.1, 0.1),
    ]
    for b, k, scale, temp in cases:
        logits = _cosine_logits(b, k, scale)
        ref = _official_sinkhorn(logits, temp)
        assert torch.isfinite(ref).all()
        assert _relative_error(L.sinkhorn_knopp(logits, temp), ref) <= 1e-6, (b, k, scale, temp)


def test_sinkhorn_stays_finite_where_dinov2_overflows():
    logits = _cosine_logits(32, 512, scale=5.0, seed=3)  # logits / temp up to 100 > 88
    assert torch.isnan(_official_sinkhorn(logits, 0.05)).any()  # the unshifted formula fails
    q = L.sinkhorn_knopp(logits, 0.05)
    assert torch.isfinite(q).all() and (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(32), atol=1e-5, rtol=0)
    # The same formula in float64 (where exp(100) is finite) is the exact reference; entries
    # near fp32's underflow (rows of prototypes no sample is near) differ by < 1e-7 absolute.
    ref = _official_sinkhorn(logits, 0.05, dtype=torch.float64)
    torch.testing.assert_close(q.double(), ref, rtol=1e-4, atol=1e-7)
    # Iterated to convergence: doubly stochastic (each sample 1, each prototype B / K).
    q = L.sinkhorn_knopp(logits, 0.05, iters=2000)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(32), atol=1e-4, rtol=0)
    torch.testing.assert_close(q.sum(dim=0), torch.full((512,), 32 / 512), atol=1e-3, rtol=0)


class _Ranks:
    """World size n in threads: ``reduce(r)`` is rank r's all-reduce(sum), in lockstep."""

    def __init__(self, n):
        import threading

        self.slots = [None] * n
        self.barrier = threading.Barrier(n)

    def reduce(self, r):
        def all_reduce_sum(x):
            self.slots[r] = x.clone()
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0].clone())  # same order on every rank
            self.barrier.wait()
            return total

        return all_reduce_sum

    def run(self, fn, parts):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(parts)) as pool:
            futures = [pool.submit(fn, p, self.reduce(r)) for r, p in enumerate(parts)]
            return [f.result(timeout=60) for f in futures]


def test_sinkhorn_over_ranks_equals_the_global_batch():
    for scale, temp in ((1.0, 0.04), (5.0, 0.05)):  # normal, and past DINOv2's overflow
        logits = _cosine_logits(24, 256, scale, seed=1)
        whole = L.sinkhorn_knopp(logits, temp)
        # Uneven shards, one empty (a rank without masked tokens in the iBOT case).
        parts = [logits[:10], logits[10:10], logits[10:17], logits[17:]]
        outs = _Ranks(len(parts)).run(lambda p, red, t=temp: L.sinkhorn_knopp(p, t, 3, red), parts)
        got = torch.cat(outs)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-7)
        if scale == 1.0:
            assert _relative_error(got, _official_sinkhorn(logits, temp)) <= 1e-5
        torch.testing.assert_close(got.sum(dim=1), torch.ones(24), atol=1e-5, rtol=0)


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


def test_recipe_heads_follow_dinov2_vitg_config():
    from webssl_cli.specs.train import TrainConfig

    # DINOv2's train/vitg14.yaml sets head_bottleneck_dim 384 under dino only; the iBOT head
    # keeps ssl_default_config.yaml's 256. Both have 131072 prototypes.
    cfg = TrainConfig()
    assert (cfg.dino_head.bottleneck, cfg.ibot_head.bottleneck) == (384, 256)
    assert cfg.dino_head.n_prototypes == cfg.ibot_head.n_prototypes == 131072
    # A partial override of the iBOT head keeps its own default bottleneck.
    assert TrainConfig(ibot_head={"n_prototypes": 1024}).ibot_head.bottleneck == 256


def test_prototype_layer_is_weight_normalised():
    from webssl_cli.train.heads import WeightNormLinear

    torch.manual_seed(0)
    layer = WeightNormLinear(8, 5)
    with torch.no_grad():
        layer.weight_g.uniform_(0.5, 2.0)
    x = torch.randn(3, 8)
    v, g = layer.weight_v, layer.weight_g
    ref = x @ (g * v / v.norm(dim=1, keepdim=True)).t()  # each prototype: g_k * v_k / ||v_k||
    out = layer(x)
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    assert v.grad is not None and g.grad is not None
    # The scale of v does not matter, only its direction.
    with torch.no_grad():
        v.mul_(7.0)
    torch.testing.assert_close(layer(x), out.detach())


def test_mae_loss_hand_computed():
    # One image, three patches of four values. Patch 0: target [1, 2, 3, 6] (mean 3, unbiased
    # variance 14/3), predicted 0 -> mean of ([-2, -1, 0, 3] / sqrt(14/3 + 1e-6))^2 =
    # 3.5 / (14/3 + 1e-6). Patch 1: target all 0 (normalised: 0), predicted 1 -> 1. Patch 2 is
    # kept (mask 0): its large error must not count. Mean over the two removed patches.
    target = torch.tensor([[[1.0, 2, 3, 6], [0, 0, 0, 0], [5, 5, 5, 9]]], dtype=torch.float64)
    pred = torch.tensor([[[0.0, 0, 0, 0], [1, 1, 1, 1], [100, 100, 100, 100]]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    want = (3.5 / (14 / 3 + 1e-6) + 1.0) / 2
    assert float(L.mae_loss(pred, target, mask)) == pytest.approx(want, rel=1e-12)
    # raw pixels: (1 + 4 + 9 + 36) / 4 = 12.5 and 1 -> 6.75
    assert float(L.mae_loss(pred, target, mask, norm_pix_loss=False)) == pytest.approx(6.75)
    # the mask may be bool; every patch removed averages all three
    everything = L.mae_loss(pred, target, torch.ones(1, 3, dtype=torch.bool), norm_pix_loss=False)
    assert float(everything) == pytest.approx((12.5 + 1 + (95**2 * 3 + 91**2) / 4) / 3)


# ---- CLIP ----------------------------------------------------------------------------------
def _ce(row: list[float], target: int) -> float:
    m = max(row)
    return -row[target] + m + math.log(sum(math.exp(x - m) for x in row))


def test_clip_loss_hand_computed():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # logits = 2 * img @ txt^T = [[1.2, 0], [1.6, 2]]
    rows, cols = [[1.2, 0.0], [1.6, 2.0]], [[1.2, 1.6], [0.0, 2.0]]
    want = ((_ce(rows[0], 0) + _ce(rows[1], 1)) / 2 + (_ce(cols[0], 0) + _ce(cols[1], 1)) / 2) / 2
    got = L.clip_loss(img, txt, torch.tensor(2.0))
    assert abs(float(got) - want) < 1e-6
    # perfectly matched orthonormal pairs: log(1 + e^-s) in both directions
    assert abs(float(L.clip_loss(img, img, torch.tensor(1.0))) - math.log(1 + math.exp(-1))) < 1e-6


def test_clip_loss_is_finite_where_a_naive_softmax_overflows():
    img = torch.eye(2)
    txt = torch.tensor([[0.6, 0.8], [0.8, 0.6]])  # each image is closer to the other caption
    scale = torch.tensor(1000.0)
    naive = torch.exp(scale * img @ txt.t())
    assert not torch.isfinite(naive).all()  # exp(800) overflows fp32
    # each direction: -600 + logsumexp(600, 800) = 200 + log(1 + e^-200)
    got = L.clip_loss(img, txt, scale)
    assert torch.isfinite(got) and abs(float(got) - 200.0) < 1e-4


def test_clip_loss_leaves_out_pairs_without_a_caption_and_has_gradients():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    valid = torch.tensor([True, False, True, True, False])
    got = L.clip_loss(img, txt, torch.tensor(10.0), valid)
    want = L.clip_loss(img[valid], txt[valid], torch.tensor(10.0))
    assert abs(got.item() - want.item()) < 1e-6
    got.backward()
    assert img.grad is not None and float(img.grad[~valid].abs().max()) == 0.0
    none = L.clip_loss(img, txt, torch.tensor(10.0), torch.zeros(5, dtype=torch.bool))
    assert float(none) == 0.0 and none.requires_grad


def test_sinkhorn_below_the_overflow_is_the_dinov2_formula_bit_for_bit():
    logits = _cosine_logits(40, 1024, scale=1.0, seed=5)
    for temp in (0.04, 0.07):
        assert torch.equal(L.sinkhorn_knopp(logits, temp), _official_sinkhorn(logits, temp))
    # just past the threshold the shifted form takes over, and still agrees
    near = logits * (L.EXP_SAFE * 0.05 + 0.5)  # max(logits) / 0.05 slightly above EXP_SAFE
    assert float(near.max()) / 0.05 > L.EXP_SAFE
    ref = _official_sinkhorn(near, 0.05)
    assert torch.isfinite(ref).all()
    # within 1e-6 relative on entries above 1e-12 (smaller ones lose digits once shifted)
    got, large = L.sinkhorn_knopp(near, 0.05), ref > 1e-12
    assert _relative_error(got[large], ref[large]) <= 1e-6
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-7)
