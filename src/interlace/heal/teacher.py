"""The dense teacher in healing: its logits for KD and the anchor layers' hidden states.

Forward hooks on the matching anchor layers of the student and the teacher record their outputs
during one forward of each; the loss then pulls the student's towards the teacher's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from interlace.arch import get_arch
from interlace.config.options import HealConfig


class Hidden:
    """Outputs of matching anchor layers in the student and the teacher, for one forward each."""

    def __init__(self) -> None:
        self.student: dict[int, torch.Tensor] = {}
        self.teacher: dict[int, torch.Tensor] = {}
        self.order: list[tuple[int, int]] = []

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(student, teacher) hidden states, each (B, T, H), of every anchor seen in this forward."""
        return [(self.student[s], self.teacher[t]) for s, t in self.order if s in self.student and t in self.teacher]


@contextlib.contextmanager
def capture_anchors(model: Any, teacher: Any, anchor_pairs: Sequence[tuple[int, int]], config: HealConfig) -> Iterator[Hidden]:
    """Record the anchors' outputs in ``model`` and ``teacher`` while the block runs.

    Yields an empty ``Hidden`` (and hooks nothing) unless ``config.anchor_weight``, a teacher and
    anchor pairs are all given. The hooks are removed on exit.
    """
    store = Hidden()
    if not (config.anchor_weight and teacher is not None and anchor_pairs):
        yield store
        return
    store.order = list(anchor_pairs)
    first = lambda out: out[0] if isinstance(out, (tuple, list)) else out  # noqa: E731
    student_layers = get_arch(model).layers
    teacher_layers = get_arch(teacher).layers
    handles = [
        student_layers[s].register_forward_hook(lambda m, a, out, s=s: store.student.__setitem__(s, first(out)))
        for s, _ in anchor_pairs
    ] + [
        teacher_layers[t].register_forward_hook(lambda m, a, out, t=t: store.teacher.__setitem__(t, first(out)))
        for _, t in anchor_pairs
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def teacher_logits(teacher: Any | None, batch: dict[str, torch.Tensor], config: HealConfig) -> torch.Tensor | None:
    """The teacher's next-token logits (B, T-1, V), without grad, or None when nothing needs them.

    The teacher runs for a KD loss and for anchors (its hooks record the anchors on the way).
    """
    if teacher is None or (config.loss == "ce" and not config.anchor_weight):
        return None
    with torch.no_grad():
        return teacher(**batch).logits[:, :-1]
