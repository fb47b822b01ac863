"""Healing objectives as pure tensor functions (sums over answer tokens; the caller normalises).

Shapes: logits (B, T, V) already shifted so position t predicts labels[t]; labels (B, T) with
IGNORE_INDEX outside assistant replies; hidden (B, T, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from interlace.data.chat import IGNORE_INDEX


def ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over answer tokens."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def kd_sum(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Summed T^2 * KL(teacher_T || student_T) over answer tokens (Hinton et al. 2015).

    Args:
        student, teacher: logits (B, T, V).
        labels: (B, T); only positions with a label count.
        temperature: softening temperature T.
        top_k: if > 0, the KL runs over the teacher's top-k tokens only (renormalised), which
            bounds memory when teacher logits are cached; 0 uses the full vocabulary.
    """
    mask = labels != IGNORE_INDEX
    s, t = student[mask].float() / temperature, teacher[mask].float() / temperature  # (N, V)
    if top_k:
        t, index = t.topk(top_k, dim=-1)
        s = s.gather(-1, index)
    log_p_teacher = F.log_softmax(t, dim=-1)
    log_p_student = F.log_softmax(s, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return kl.sum() * temperature**2


def hidden_mse_sum(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed per-token mean squared error of hidden states at answer-token positions."""
    mask = labels != IGNORE_INDEX
    return (student[mask].float() - teacher[mask].float()).pow(2).mean(-1).sum()


def objective(
    kind: str, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, alpha: float, temperature: float, top_k: int
) -> torch.Tensor:
    """The healing loss (summed): "ce", "kd", or "kd+ce" = (1 - alpha) * ce + alpha * kd."""
    if kind == "ce":
        return ce_sum(logits, labels)
    if teacher_logits is None:
        raise ValueError(f"heal loss {kind!r} needs a teacher model")
    kd = kd_sum(logits, teacher_logits, labels, temperature, top_k)
    return kd if kind == "kd" else (1 - alpha) * ce_sum(logits, labels) + alpha * kd
