"""Layer redundancy scores: pure tensor math, no hooks or models (arXiv 2511.19676, method).

h_j is the residual stream entering decoder layer j (h_L is the last layer's output, before the
final norm). s_k(i) = mean over samples of (mean over the sample's real tokens of
cos(h_i[t], h_{i+k}[t])). S1 = s_1 (1 - ShortGPT's Block Influence), S2 = s_2, S3 = s_3.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the hidden dimension, in fp32: (B, T, C), (B, T, C) -> (B, T)."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)


def unit_vectors(hidden: torch.Tensor) -> torch.Tensor:
    """Each token's state scaled to unit length, in fp32: (B, T, C) -> (B, T, C).

    The steps of ``F.cosine_similarity`` (divide by the norm clamped at eps, then multiply and
    sum), so ``torch.linalg.vecdot(unit_vectors(a), unit_vectors(b))`` is ``token_cosine(a, b)``
    bit for bit, while each state is normalised once instead of once per pair.
    """
    hidden = hidden.float()
    return hidden / torch.linalg.vector_norm(hidden, dim=-1, keepdim=True).clamp_min(1e-8)


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over tokens where mask is 1: (B, T), (B, T) -> (B,)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


@dataclass
class RedundancyScores:
    """s_k(i) for each requested k, over num_layers + 1 residual states.

    Attributes:
        num_layers: decoder layers L of the scored model.
        similarity: {k: [s_k(0), ..., s_k(L - k)]}; the entry i = L - k uses the last layer's
            (pre-norm) output, which the paper's released code never uses.
        num_samples: calibration samples averaged.
    """

    num_layers: int
    similarity: dict[int, list[float]]
    num_samples: int
    meta: dict = field(default_factory=dict)

    def s(self, k: int, use_final_state: bool = False) -> np.ndarray:
        """s_k as an array indexed by start layer; without the final state it has L - k entries."""
        if k not in self.similarity:
            raise KeyError(f"s_{k} was not computed; rerun the analysis with k={k} in --ks")
        values = np.asarray(self.similarity[k], dtype=np.float64)
        return values if use_final_state else values[: self.num_layers - k]

    def to_json(self) -> dict:
        return {
            "num_layers": self.num_layers,
            "similarity": {str(k): v for k, v in self.similarity.items()},
            "num_samples": self.num_samples,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict) -> RedundancyScores:
        return cls(
            num_layers=data["num_layers"],
            similarity={int(k): list(v) for k, v in data["similarity"].items()},
            num_samples=data["num_samples"],
            meta=data.get("meta", {}),
        )


class SimilarityAccumulator:
    """Accumulates s_k(i) batch by batch from residual states that arrive in layer order.

    Only the last max(ks) states of the current batch are held (as unit vectors), so memory does
    not grow with the number of layers or samples. Nothing waits for the device inside a batch:
    each state is normalised once, each (state, k) pair is one fused dot product
    (``linalg.vecdot``), and the per-batch sums reach the host in one copy at ``end_batch``.
    """

    def __init__(self, num_layers: int, ks: tuple[int, ...] = (1, 2, 3)):
        if not ks or min(ks) < 1 or max(ks) > num_layers:
            raise ValueError(f"each k must be in 1..{num_layers} (the number of layers), got {ks}")
        self.num_layers = num_layers
        self.ks = tuple(sorted(set(ks)))
        self.sums = {k: np.zeros(num_layers + 1 - k, dtype=np.float64) for k in self.ks}
        self.num_samples = 0
        self._window: deque[torch.Tensor] = deque(maxlen=max(self.ks))
        self._mask: torch.Tensor | None = None
        self._pending: list[tuple[int, int, torch.Tensor]] = []  # (k, start layer, sum over the batch) on the device
        self._next_state = 0

    def start_batch(self, mask: torch.Tensor) -> None:
        """Begin a batch; mask (B, T) is 1 on the tokens that count (padding excluded)."""
        self._window.clear()
        self._pending.clear()
        self._mask = mask
        self._next_state = 0

    def add_state(self, hidden: torch.Tensor) -> None:
        """Feed h_j (B, T, C) for j = 0, 1, ..., L in order."""
        assert self._mask is not None, "call start_batch first"
        j = self._next_state
        if j == 0:
            self._mask = self._mask.to(hidden.device, torch.float32)
        unit = unit_vectors(hidden.detach())
        for back, earlier in enumerate(reversed(self._window), start=1):
            if back in self.sums:
                per_sample = masked_token_mean(torch.linalg.vecdot(earlier, unit), self._mask)  # (B,)
                self._pending.append((back, j - back, per_sample.sum()))
        self._window.append(unit)
        self._next_state += 1

    def end_batch(self) -> None:
        if self._next_state != self.num_layers + 1:
            raise RuntimeError(f"expected {self.num_layers + 1} residual states, got {self._next_state}")
        values = torch.stack([total for _, _, total in self._pending]).tolist()  # the batch's one host sync
        for (k, start, _), value in zip(self._pending, values):
            self.sums[k][start] += value
        self.num_samples += int(self._mask.shape[0])
        self._window.clear()
        self._pending.clear()
        self._mask = None

    def result(self, meta: dict | None = None) -> RedundancyScores:
        if not self.num_samples:
            raise RuntimeError("no samples were accumulated")
        return RedundancyScores(
            num_layers=self.num_layers,
            similarity={k: (self.sums[k] / self.num_samples).tolist() for k in self.ks},
            num_samples=self.num_samples,
            meta=meta or {},
        )
