r"""Minibatch index streams for many independent chains.

Two schemes, both drawing only from the ``torch.Generator`` they are given:

- **without replacement** (random reshuffling, the default of :func:`~sgdtemp.simulate.run_sgd`):
  every epoch each chain draws a fresh uniform permutation of the $N$ examples and cuts it into
  $\lfloor N/B\rfloor$ consecutive batches of $B$. When $B$ does not divide $N$, the
  $N \bmod B$ examples left at the end of the permutation are dropped for that epoch (a uniformly
  random set, so no example is favoured) and the next epoch reshuffles. Every batch is thus a
  uniform sample of $B$ distinct examples, and batches of one epoch are disjoint. On the CPU the
  permutations are Fisher-Yates shuffles in a compiled kernel (:mod:`sgdtemp.simulate._kernels`)
  fed by NumPy's PCG64: measured at 4096 chains x 4096 examples, B = 32, 0.62 ms per step against
  0.92 ms with one ``torch.randperm`` per chain. Off the CPU they come from sorting random keys.
- **with replacement**: every index is uniform on $\{0, \dots, N-1\}$, independently. On the
  CPU the indices come from NumPy's PCG64 (Lemire's unbiased bounded integers, int32): measured
  at 4096 chains x B = 32, 0.40 ms per step against 1.04 ms for ``torch.randint`` (int64,
  mt19937), which was a third of an SGD step.

On the CPU NumPy's PCG64 is seeded by one 63-bit draw from the given generator, so that stays the
only source of randomness.

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
# Raw 64-bit words handed to the shuffling kernel per call (512 KiB: stays in cache), and words
# drawn beyond the need of a short epoch for Lemire's rejections (each draw is rejected with
# probability below N / 2^32; more rejections only cost another call).
_RAW_WORDS = 1 << 16
_SPARE_WORDS = 8


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
        rng = np.random.Generator(_numpy_bit_generator(generator))
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
    if generator.device.type != "cpu":
        while True:
            perm = _permutations(n, chains, generator)  # (chains, n) int32
            for j in range(n_batches):
                yield perm[:, j * batch : (j + 1) * batch].to(
                    torch.int32, memory_format=torch.contiguous_format
                )
    # Each chain's row is shuffled whole in a compiled kernel (see sgdtemp.simulate._kernels)
    # and copied batch-major, so each step's batch is one contiguous block. Rows shuffle on from
    # the last epoch's order (Fisher-Yates is uniform whatever it was). int16 where n allows
    # halves the memory traffic; each step gets its own int32 copy.
    from sgdtemp.simulate._kernels import shuffle_rows  # Numba: 0.4 s to import, paid here only

    bits = _numpy_bit_generator(generator)
    dtype = np.int16 if n <= np.iinfo(np.int16).max else np.int32
    state = np.broadcast_to(np.arange(n, dtype=dtype), (chains, n)).copy()
    epoch = np.empty((n_batches, chains, batch), dtype=dtype)
    while True:
        chain, pos = 0, n - 1
        while chain < chains:
            draws = (chains - chain) * (n - 1)  # still to draw, at most (rejections aside)
            words = min(_RAW_WORDS, (draws + 1) // 2 + _SPARE_WORDS)
            chain, pos = shuffle_rows(state, bits.random_raw(words), epoch, chain, pos)
        for block in epoch:
            yield torch.from_numpy(block.astype(np.int32))


def _permutations(n: int, chains: int, generator: torch.Generator) -> Tensor:
    """Independent uniform permutations of ``range(n)``, one per chain, ``(chains, n)`` int32.

    From sorting random keys (one call for all chains): used for small ``n`` and off the CPU.
    """
    keys = torch.rand(
        (chains, n), generator=generator, dtype=torch.float64, device=generator.device
    )
    return keys.argsort(dim=1).to(torch.int32)


def _numpy_bit_generator(generator: torch.Generator) -> np.random.PCG64:
    """NumPy's PCG64, seeded by one 63-bit draw from ``generator`` (so it stays the only source)."""
    return np.random.PCG64(int(torch.randint(0, 2**63 - 1, (1,), generator=generator)))
