"""Baselines that need more than redundancy scores: SLEB (iterative, model in the loop) and 2:4 sparsity."""
