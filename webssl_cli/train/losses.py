"""The three DINOv2 losses, one concept each; tensors in, tensors out.

- DINO: cross-entropy between the student's CLS prototype scores (temperature 0.1) and the
  teacher's, centred by Sinkhorn-Knopp (Web-DINO) or by an EMA centre (DINO), over every
  (student crop, teacher global crop) pair of different views.
- iBOT: the same cross-entropy on the masked patch tokens of the global crops, each image's
  tokens averaged, then summed over images and divided by the number of images.
- KoLeo: -mean log distance of each student global CLS feature to its nearest neighbour.

Cross-rank sums go through an optional ``reduce`` hook (``torch.distributed.all_reduce`` in a
distributed run, identity here), so centring sees the global batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Reduce = Callable[[Tensor], Tensor]
# The largest logits / temp that Sinkhorn-Knopp exponentiates without a shift: exp(60) ~ 1e26
# leaves room for sums over 1e12 entries below fp32's maximum (3.4e38).
EXP_SAFE = 60.0


def _identity(x: Tensor) -> Tensor:
    return x


def _shared_shift(z: Tensor, reduce: Reduce) -> Tensor:
    """A shift c, the same on every rank, with max(z over all ranks) <= c <= that + log(ranks).

    The hook only sums, so c is a log-sum-exp of the rank maxima around their mean (float64:
    maxima may differ by hundreds). One rank: c is its max. A rank without rows takes no part.
    """
    f64 = torch.float64
    has = torch.tensor(float(z.numel() > 0), dtype=f64, device=z.device)
    m = z.max().to(f64) if z.numel() else torch.zeros((), dtype=f64, device=z.device)
    stats = reduce(torch.stack([m * has, has]))
    mean = stats[0] / stats[1].clamp(min=1.0)
    spread = reduce(torch.exp(m - mean) * has)
    return (mean + torch.log(spread.clamp(min=1e-300))).to(z.dtype)


@torch.no_grad()
def sinkhorn_knopp(
    logits: Tensor, temp: float, iters: int = 3, reduce: Reduce | None = None
) -> Tensor:
    """Teacher targets (B, K) from logits (B, K): rows sum to 1, prototypes used equally.

    Q = exp(logits / temp) is alternately normalised over prototypes (rows of Q^T) and samples,
    in fp32 as DINOv2 does; B counts the samples of every rank. DINOv2 overflows to NaN once
    logits / temp passes ~88 (fp32 exp). Here, when logits / temp may come near that (a shift
    c shared by all ranks, at least their maximum, exceeds ``EXP_SAFE``), Q is formed as
    exp(logits / temp - c) instead; the first normalisation cancels the factor exp(-c), and the
    rounding of the subtraction is recovered (TwoSum error term, exp(d + e) ~ exp(d)(1 + e)) so
    the targets match the unshifted formula to fp32 accuracy. Below it (cosine logits over a
    temperature >= 0.02 always are), the unshifted formula runs as DINOv2 computes it.
    """
    reduce = reduce or _identity
    z = logits.float() / temp
    c = _shared_shift(z, reduce)
    if float(c) <= EXP_SAFE:
        q = z.exp_().t()  # (K, B)
    else:
        d = z - c
        back = d - z  # TwoSum of z + (-c): err = (z - (d - back)) + (-c - back), exactly
        err = z.sub_(d - back)
        err -= back.add_(c)
        del back
        q = d.exp_().mul_(err.add_(1.0)).t()
        del err
    k = q.shape[0]
    b = reduce(torch.tensor(float(q.shape[1]), device=q.device))
    q /= reduce(q.sum())
    for _ in range(iters):
        q /= reduce(q.sum(dim=1, keepdim=True))  # each prototype gets mass 1/K ...
        q /= k
        q /= q.sum(dim=0, keepdim=True)  # ... and each sample mass 1/B
        q /= b
    q *= b
    return q.t()


@torch.no_grad()
def softmax_center(logits: Tensor, center: Tensor, temp: float) -> Tensor:
    """DINO's EMA centring: softmax((logits - center) / temp)."""
    return F.softmax((logits.float() - center) / temp, dim=-1)


@torch.no_grad()
def updated_center(
    center: Tensor, logits: Tensor, momentum: float, reduce: Reduce | None = None
) -> Tensor:
    """The EMA centre after a batch of teacher logits (B, K): m * c + (1 - m) * mean."""
    reduce = reduce or _identity
    n = reduce(torch.tensor(float(logits.shape[0]), device=logits.device))
    batch_center = reduce(logits.float().sum(dim=0, keepdim=True)) / n
    return center * momentum + batch_center * (1 - momentum)


def dino_loss(student_logits: Tensor, teacher_probs: Tensor, student_temp: float) -> Tensor:
    """Mean cross-entropy over (student crop s, teacher crop t) pairs with s != t.

    student_logits: (S, B, K), the 2 global crops first, then the local crops.
    teacher_probs: (T, B, K) for the T global crops. Global crop i is never matched to itself.
    """
    S, B, _ = student_logits.shape
    T = teacher_probs.shape[0]
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)  # (S, B, K)
    ce = -torch.einsum("tbk,sbk->ts", teacher_probs.float(), log_p) / B  # (T, S)
    same_view = torch.eye(T, S, dtype=torch.bool, device=ce.device)
    return ce.masked_fill(same_view, 0.0).sum() / (T * S - min(T, S))


def ibot_loss(
    student_logits: Tensor,
    teacher_probs: Tensor,
    token_weights: Tensor,
    n_images: int,
    student_temp: float,
) -> Tensor:
    """iBOT masked-patch loss.

    student_logits, teacher_probs: (M, K) over the M masked tokens of all global crops;
    token_weights: (M,) = 1 / (masked tokens of that token's image); n_images: global crops in
    the batch (masked or not), as DINOv2 divides by it.
    """
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    per_token = -(teacher_probs.float() * log_p).sum(dim=-1)  # (M,)
    return (per_token * token_weights).sum() / max(n_images, 1)


def koleo_loss(features: Tensor, eps: float = 1e-8) -> Tensor:
    """Kozachenko-Leonenko entropy estimator on (B, D) features: -mean log NN distance.

    Duplicates stay finite: the distance to an identical neighbour is ||eps||, not 0.
    """
    x = F.normalize(features.float(), dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)  # never one's own neighbour
        nn_idx = dots.argmax(dim=1)
    dist = F.pairwise_distance(x, x[nn_idx], p=2, eps=eps)
    return -torch.log(dist + eps).mean()


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix_loss: bool = True) -> Tensor:
    """MAE's reconstruction loss on patchified [N, L, P] tensors; ``mask`` [N, L] is 1 where a
    patch was removed. With ``norm_pix_loss`` each target patch is normalised by its own mean
    and variance (unbiased, eps 1e-6) as the MAE reference does. The squared error is averaged
    over a patch's values, then over the removed patches."""
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum()


def clip_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor, valid: Tensor | None = None
) -> Tensor:
    """CLIP's symmetric contrastive loss: the mean of the image->text and text->image
    cross-entropies over the (N, N) logits ``logit_scale * I @ T^T`` whose diagonal holds the
    matching pairs (OpenCLIP's ``ClipLoss``).

    ``image_features``, ``text_features``: (N, D), already L2-normalised (gathered from every
    rank when the negatives are global); ``logit_scale``: the multiplier (exp of the learnt
    log scale). ``valid`` (N,) bool leaves pairs out (an image without a caption): neither a
    query nor a negative. log-softmax keeps any logit scale finite; no pair left: 0.
    """
    logits = logit_scale * image_features.float() @ text_features.float().t()
    target = torch.arange(logits.shape[0], device=logits.device)
    if valid is None:
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    keep = valid.to(device=logits.device, dtype=torch.bool)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    sub = logits[keep][:, keep]
    target = torch.arange(sub.shape[0], device=logits.device)
    return (F.cross_entropy(sub, target) + F.cross_entropy(sub.t(), target)) / 2
