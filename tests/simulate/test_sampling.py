"""Minibatch index streams: coverage per epoch, uniformity, independence, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from sgdtemp.simulate import minibatch_indices
from sgdtemp.simulate._kernels import shuffle_rows
from sgdtemp.simulate._sampling import _permutations

# Significance level of the chi-square uniformity tests (fixed seeds: deterministic outcome).
ALPHA = 1e-3


def _take(stream, k: int) -> torch.Tensor:
    return torch.stack(list(itertools.islice(stream, k)))  # (k, chains, B)


@pytest.mark.parametrize("n, batch", [(12, 4), (300, 25)])
def test_reshuffling_covers_each_example_once_per_epoch(n: int, batch: int) -> None:
    chains, epochs = 7, 3
    gen = torch.Generator().manual_seed(0)
    batches = _take(
        minibatch_indices(n, chains, batch, replacement=False, generator=gen), epochs * n // batch
    )
    assert batches.dtype == torch.int32 and batches.shape[1:] == (chains, batch)
    per_epoch = batches.view(epochs, n // batch, chains, batch).permute(0, 2, 1, 3)
    per_epoch = per_epoch.reshape(epochs, chains, n)
    expected = torch.arange(n).expand(epochs, chains, n)
    assert torch.equal(per_epoch.sort(dim=-1).values, expected)
    # Fresh permutations: epochs differ, chains differ.
    assert not torch.equal(per_epoch[0], per_epoch[1])
    assert not torch.equal(per_epoch[0, 0], per_epoch[0, 1])


def test_partial_last_batch_is_dropped() -> None:
    n, batch, chains = 10, 4, 5  # 2 batches per epoch, 2 examples left over each epoch
    gen = torch.Generator().manual_seed(1)
    batches = _take(minibatch_indices(n, chains, batch, replacement=False, generator=gen), 6)
    for epoch in batches.view(3, 2, chains, batch):
        seen = epoch.permute(1, 0, 2).reshape(chains, 2 * batch)
        for row in seen:
            assert len(set(row.tolist())) == 2 * batch  # distinct within the epoch


@pytest.mark.parametrize("n", [20, 200])
@pytest.mark.parametrize("path", ["compiled", "sorted keys"])  # CPU, and off the CPU
def test_permutations_are_uniform(n: int, path: str) -> None:
    """The example at each of two fixed slots of an epoch is uniform (chi-square test)."""
    chains = 4000
    gen = torch.Generator().manual_seed(2)
    if path == "compiled":
        first = next(minibatch_indices(n, chains, n, replacement=False, generator=gen))
    else:
        first = _permutations(n, chains, gen)
    for slot in (0, n - 1):
        counts = torch.bincount(first[:, slot], minlength=n).numpy()
        assert stats.chisquare(counts).pvalue > ALPHA
    # Pairs of slots: the same example never appears twice in one permutation.
    assert bool((first[:, 0] != first[:, 1]).all())


def test_with_replacement_is_uniform_and_independent() -> None:
    n, chains, batch = 50, 300, 8
    gen = torch.Generator().manual_seed(3)
    batches = _take(minibatch_indices(n, chains, batch, replacement=True, generator=gen), 20)
    assert batches.dtype == torch.int32 and int(batches.min()) >= 0 and int(batches.max()) < n
    counts = torch.bincount(batches.reshape(-1), minlength=n).numpy()
    assert stats.chisquare(counts).pvalue > ALPHA
    # With replacement a batch can repeat an example; reshuffling never does.
    repeats = sum(len(set(b.tolist())) < batch for b in batches.reshape(-1, batch))
    assert repeats > 0


@pytest.mark.parametrize("replacement", [True, False])
def test_same_seed_same_stream(replacement: bool) -> None:
    def first(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return _take(minibatch_indices(300, 4, 16, replacement=replacement, generator=gen), 40)

    assert torch.equal(first(5), first(5))
    assert not torch.equal(first(5), first(6))


def _slow_shuffle(rows: list[list[int]], words: list[int]) -> list[list[int]]:
    """Fisher-Yates from n - 1 down, Lemire's bounded draws from the words' 32-bit halves."""
    halves = iter([h for w in words for h in (w & 0xFFFFFFFF, w >> 32)])
    out = [list(r) for r in rows]
    for row in out:
        for i in range(len(row) - 1, 0, -1):
            bound = i + 1
            while True:
                m = next(halves) * bound
                if m % 2**32 >= 2**32 % bound:  # outside the biased sliver
                    break
            j = m >> 32
            row[i], row[j] = row[j], row[i]
    return out


@pytest.mark.parametrize("chunk", [1, 2, 7, 10_000])
def test_shuffle_kernel_matches_a_slow_fisher_yates_in_any_chunking(chunk: int) -> None:
    """Same draws, same permutations, however the raw words are split between calls.

    A quarter of the 32-bit draws are 0, which Lemire's method rejects for every bound that is not a
    power of two, so the rejection loop and resumption at a rejection are exercised.
    """
    chains, n, batch = 5, 37, 6
    rng = np.random.default_rng(9)
    words = rng.integers(0, 2**64, 400, dtype=np.uint64, endpoint=False)
    words[rng.random(400) < 0.5] &= np.uint64(0xFFFFFFFF00000000)  # low half 0
    start = [list(rng.permutation(n)) for _ in range(chains)]
    expected = _slow_shuffle(start, [int(w) for w in words])
    state = np.array(start, dtype=np.int16)
    epoch = np.full((n // batch, chains, batch), -1, dtype=np.int16)
    chain, pos, used = 0, n - 1, 0
    while chain < chains:
        assert used < len(words), "the test's draws ran out"
        chain, pos = shuffle_rows(state, words[used : used + chunk], epoch, chain, pos)
        used += chunk
    assert state.tolist() == expected
    used_part = np.array(expected)[:, : n // batch * batch].reshape(chains, n // batch, batch)
    assert np.array_equal(epoch, used_part.transpose(1, 0, 2))
