"""k-NN classification on frozen features (DINO/DINOv2 protocol): cosine similarity on
L2-normalised features, the k nearest training images vote with weight exp(sim / T)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from webssl_cli import device as dev


@torch.no_grad()
def knn_predict(
    train: Tensor,
    train_labels: Tensor,
    query: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
    device: torch.device | None = None,
) -> Tensor:
    """Predicted class per query row (on the CPU). ``train`` (N, D), ``train_labels`` (N,),
    ``query`` (M, D); computed on ``device`` (default: the device module's choice)."""
    device = device or dev.pick_device()
    train = F.normalize(train.to(device).float(), dim=1)
    query = F.normalize(query.to(device).float(), dim=1)
    train_labels = train_labels.to(device)
    n_classes = int(train_labels.max()) + 1
    k = min(k, train.shape[0])
    preds = []
    for i in range(0, query.shape[0], chunk):
        sims = query[i : i + chunk] @ train.T  # (m, N)
        top_sim, top_idx = sims.topk(k, dim=1)  # (m, k)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sims.shape[0], n_classes, device=device)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        preds.append(votes.argmax(dim=1).cpu())
    return torch.cat(preds)


def knn_top1(
    train: Tensor,
    train_labels: Tensor,
    val: Tensor,
    val_labels: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    pred = knn_predict(train, train_labels, val, k=k, temperature=temperature)
    return float((pred == val_labels).float().mean())
