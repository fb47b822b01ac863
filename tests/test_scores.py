"""Redundancy score math on hand-made tensors: the accumulator is the plain per-pair formula."""

import numpy as np
import pytest
import torch

from interlace.scores import SimilarityAccumulator, masked_token_mean, token_cosine, unit_vectors


def test_unit_vectors_give_token_cosine_bit_for_bit():
    torch.manual_seed(0)
    a = torch.randn(3, 7, 64)
    b = a + 0.5 * torch.randn(3, 7, 64)
    b[0, 0] = 0  # a zero state: both clamp its norm at eps
    assert torch.equal(torch.linalg.vecdot(unit_vectors(a), unit_vectors(b)), token_cosine(a, b))


def test_accumulator_equals_the_per_pair_formula():
    torch.manual_seed(1)
    layers, ks = 5, (1, 2, 3)
    batches = []
    for batch in range(2):
        mask = torch.ones(4, 6, dtype=torch.long)
        mask[batch, :2] = 0  # left padding in one sample
        batches.append(([torch.randn(4, 6, 16) for _ in range(layers + 1)], mask))
    accumulator = SimilarityAccumulator(layers, ks)
    for states, mask in batches:
        accumulator.start_batch(mask)
        for state in states:
            accumulator.add_state(state)
        accumulator.end_batch()
    result = accumulator.result()
    for k in ks:
        expected = np.zeros(layers + 1 - k)
        for states, mask in batches:
            for i in range(layers + 1 - k):
                expected[i] += masked_token_mean(token_cosine(states[i], states[i + k]), mask).sum().item()
        assert result.similarity[k] == (expected / 8).tolist()  # exactly, not approximately
    assert result.num_samples == 8


def test_accumulator_checks_the_number_of_states():
    accumulator = SimilarityAccumulator(3, (1,))
    accumulator.start_batch(torch.ones(1, 2))
    accumulator.add_state(torch.randn(1, 2, 4))
    with pytest.raises(RuntimeError, match="expected 4 residual states, got 1"):
        accumulator.end_batch()
