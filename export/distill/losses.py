"""Distillation losses: what the student minimizes to imitate the teacher.

* Sentence embeddings (Reimers and Gurevych 2020, multilingual knowledge distillation): MSE between the
  student's and the teacher's pooled vectors plus ``1 - cosine`` (the runtime L2-normalizes, so direction
  is what users see; MSE also keeps the scale).
* Text classification: ``T^2 * KL(softmax(t / T) || softmax(s / T))`` (Hinton et al.; the ``T^2`` keeps the
  gradient scale independent of ``T``) plus cross-entropy on gold labels where the user's texts have them.
* Token classification: the same KL per token (padding excluded), averaged over tokens.
* Optionally MSE between the student's hidden states and the teacher's at the mapped layers.
* Optionally, for sentence embeddings, the in-batch relations (relational knowledge distillation, Park et al.
  2019; the softmax form of contrastive distillation): each text's cosine similarities to the other texts of its
  batch, as a distribution at a low temperature, from the teacher's vectors and from the student's, and the KL
  between them. The pointwise losses judge each vector alone; retrieval depends on which of two vectors is
  nearer, so this loss trains the ranking the teacher gives a batch, weighting the nearest texts most.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def embedding_loss(
    student: torch.Tensor, teacher: torch.Tensor, mse_weight: float = 1.0, cosine_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE plus (1 - cosine) between pooled vectors ``(B, H)``; returns the loss and its parts."""
    import torch.nn.functional as F

    mse = F.mse_loss(student, teacher)
    cos = 1.0 - F.cosine_similarity(student, teacher, dim=-1).mean()
    return mse_weight * mse + cosine_weight * cos, {"mse": float(mse.detach()), "1-cos": float(cos.detach())}


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` at temperature ``T``, averaged over rows of ``(N, C)`` logits."""
    import torch.nn.functional as F

    t = temperature
    log_p_student = F.log_softmax(student / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * t * t


def classification_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    kl_weight: float = 1.0,
    ce_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL to the teacher's softened logits, plus cross-entropy where ``labels`` (``-100`` = none) are given."""
    import torch.nn.functional as F

    kl = kl_loss(student, teacher, temperature)
    loss = kl_weight * kl
    parts = {"kl": float(kl.detach())}
    if labels is not None and ce_weight > 0 and bool((labels >= 0).any()):
        ce = F.cross_entropy(student, labels, ignore_index=-100)
        loss = loss + ce_weight * ce
        parts["ce"] = float(ce.detach())
    return loss, parts


def token_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float, kl_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token KL on ``(B, T, C)`` logits over the tokens where ``mask`` is 1."""
    keep = mask.bool()
    kl = kl_loss(student[keep], teacher[keep], temperature)
    return kl_weight * kl, {"kl": float(kl.detach())}


def hidden_loss(
    student_states: Sequence[torch.Tensor],
    teacher_states: Sequence[torch.Tensor],
    layer_map: Sequence[int],
    mask: torch.Tensor,
) -> torch.Tensor:
    """MSE between student layer ``i``'s output and teacher layer ``layer_map[i]``'s, over real tokens.

    ``*_states`` are transformers' ``hidden_states`` (index 0 is the embedding output).
    """
    keep = mask.bool()
    losses = [
        ((student_states[i + 1][keep] - teacher_states[t + 1][keep]) ** 2).mean() for i, t in enumerate(layer_map)
    ]
    return sum(losses) / len(losses)


def relation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(p_teacher || p_student)`` over each row's in-batch neighbours, averaged over rows of ``(B, H)``.

    ``p_x[i]`` is the softmax, at ``temperature``, of row ``i``'s cosine similarities to the batch's other
    rows (itself excluded). Zero when the student's similarities equal the teacher's; needs ``B >= 3``
    (with two rows each distribution has one value), else returns 0.
    """
    import torch
    import torch.nn.functional as F

    n = student.shape[0]
    if n < 3:
        return student.sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=student.device)
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    log_p_s = F.log_softmax((s @ s.T)[off].view(n, n - 1) / temperature, dim=-1)
    log_p_t = F.log_softmax((t @ t.T)[off].view(n, n - 1) / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
