r"""Minibatch index streams for many independent chains.

Two schemes, both drawing only from the ``torch.Generator`` they are given:

- **without replacement** (random reshuffling, the default of :func:`~sgdtemp.simulate.run_sgd`):
  every epoch each chain draws a fresh uniform permutation of the $N$ examples and cuts it into
  $\lfloor N/B\rfloor$ consecutive batches of $B$. When $B$ does not divide $N$, the
  $N \bmod B$ examples left at the end of the permutation are dropped for that epoch (a uniformly
  random set, so no example is favoured) and the next epoch reshuffles. Every batch is thus a
  uniform sample of $B$ distinct examples, and batches of one epoch are disjoint.
- **with replacement**: every index is uniform on $\{0, \dots, N-1\}$, independently. On the
  CPU the indices come from NumPy's PCG64 (Lemire's unbiased bounded integers, int32), seeded by
  one 63-bit draw from the given generator: measured at 4096 chains x B = 32, 0.40 ms per step
  against 1.04 ms for ``torch.randint`` (int64, mt19937), which was a third of an SGD step.

A minibatch mean of per-example gradients then has covariance $C/B$ with replacement and
$\frac{N-B}{N-1}C/B$ without; without replacement two batches of the same epoch are also
correlated, $-C/(N-1)$ (they are disjoint).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["minibatch_indices"]

# Indices drawn at once with replacement (amortizes the per-call cost over many steps), and at
# most this many steps' worth.
_BLOCK_ELEMENTS = 1 << 16
_BLOCK_MAX_STEPS = 256
# Up to this many examples, a chain's permutation comes from sorting random keys (one call for
# all chains); above, from one torch.randperm per chain (linear time, no sort).
_ARGSORT_MAX_N = 128
# Chains whose permutations are made together before being copied batch-major (a tile of
# int16 permutations of a few thousand examples stays in cache).
_PERMUTATION_TILE = 32


def minibatch_indices(
    n_examples: int,
    n_chains: int,
    batch_size: int,
    *,
    replacement: bool,
    generator: torch.Generator,
) -> Iterator[Tensor]:
    r"""An endless stream of minibatches, one ``(n_chains, batch_size)`` index tensor per step.

    Args:
        n_examples: $N$, the number of training examples.
        n_chains: number of independent chains.
        batch_size: $B$, with $1 \\le B \\le N$.
        replacement: draw indices independently (True) or reshuffle every epoch (False).
        generator: the only source of randomness; tensors live on its device.

    Yields:
        Example indices for every chain, ``(n_chains, batch_size)``, int32 (int64 with
            replacement beyond $2^{31} - 1$ examples).

    Example:
        >>> stream = minibatch_indices(6, 2, 3, replacement=False,
        ...                            generator=torch.Generator().manual_seed(0))
        >>> epoch = torch.cat([next(stream), next(stream)], dim=1)
        >>> epoch.sort(dim=1).values.tolist()
        [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]
    """
    if replacement:
        return _with_replacement(n_examples, n_chains, batch_size, generator)
    return _reshuffling(n_examples, n_chains, batch_size, generator)


def _with_replacement(
    n: int, chains: int, batch: int, generator: torch.Generator
) -> Iterator[Tensor]:
    steps = min(_BLOCK_MAX_STEPS, max(1, _BLOCK_ELEMENTS // (chains * batch)))
    if generator.device.type == "cpu":
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
        rng = np.random.Generator(np.random.PCG64(seed))
        dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
        while True:
            drawn = rng.integers(0, n, (steps, chains, batch), dtype=dtype)
            yield from torch.from_numpy(drawn).unbind(0)
    while True:
        block = torch.randint(
            0, n, (steps, chains, batch), generator=generator, device=generator.device
        )
        yield from block.unbind(0)


def _reshuffling(n: int, chains: int, batch: int, generator: torch.Generator) -> Iterator[Tensor]:
    n_batches = n // batch
    if n <= _ARGSORT_MAX_N or generator.device.type != "cpu":
        while True:
            perm = _permutations(n, chains, generator)  # (chains, n) int32
            for j in range(n_batches):
                yield perm[:, j * batch : (j + 1) * batch].to(
                    torch.int32, memory_format=torch.contiguous_format
                )
    # One torch.randperm per chain (same draws, same batches as slicing a (chains, n) array),
    # stored batch-major so that each step's batch is one contiguous block, in a buffer reused
    # every epoch. Permutations are made for a tile of chains at a time in a small buffer and
    # copied over in runs of tile * batch indices (a per-chain copy, or slicing a chain-major
    # array per step, scatters runs of one batch over the whole buffer and cost as much as a
    # third of the permutations). int16 where n allows halves the memory traffic.
    dtype = torch.int16 if n <= torch.iinfo(torch.int16).max else torch.int32
    used = n_batches * batch
    epoch = torch.empty((n_batches, chains, batch), dtype=dtype)
    tile = torch.empty((min(chains, _PERMUTATION_TILE), n), dtype=dtype)
    while True:
        for c0 in range(0, chains, tile.shape[0]):
            rows = tile[: min(tile.shape[0], chains - c0)]
            for row in rows:
                torch.randperm(n, generator=generator, dtype=dtype, out=row)
            source = rows[:, :used].view(rows.shape[0], n_batches, batch).transpose(0, 1)
            epoch[:, c0 : c0 + rows.shape[0], :] = source
        for block in epoch.unbind(0):
            yield block.to(torch.int32)


def _permutations(n: int, chains: int, generator: torch.Generator) -> Tensor:
    """Independent uniform permutations of ``range(n)``, one per chain, ``(chains, n)`` int32.

    From sorting random keys (one call for all chains): used for small ``n`` and off the CPU.
    """
    keys = torch.rand(
        (chains, n), generator=generator, dtype=torch.float64, device=generator.device
    )
    return keys.argsort(dim=1).to(torch.int32)
