"""The symmetric tiled refresh against a plain row-by-row pass: entropy, neighbours, ties, workers."""

import pytest
import torch
import torch.nn.functional as F

from and_plugin.curriculum import _entropy_and_neighbours_rows, entropy_and_neighbours


def unit(n, d, dtype=torch.float32, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1).to(dtype)


def plain(bank, tau, k):
    dtype = torch.float64 if bank.dtype == torch.float64 else torch.float32
    return _entropy_and_neighbours_rows(bank, tau, k, 1 << 30, dtype)


@pytest.mark.parametrize(
    "n, d, k, dtype, budget",
    [
        (1000, 16, 1, torch.float32, None),  # one 512-tile row block and a ragged one
        (333, 8, 3, torch.float32, 2 * 4 * 50 * 50),  # 50 x 50 tiles, k > 1
        (257, 5, 1, torch.float64, 2 * 8 * 16 * 16),
        (600, 32, 1, torch.bfloat16, 2 * 4 * 64 * 64),
    ],
)
def test_tiles_equal_the_row_pass(n, d, k, dtype, budget):
    bank = unit(n, d, dtype)
    entropy, nearest = entropy_and_neighbours(bank, 0.1, k, budget)
    expected_entropy, expected_nearest = plain(bank, 0.1, k)
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    assert torch.allclose(entropy, expected_entropy, rtol=tolerance, atol=tolerance)
    assert torch.equal(nearest.sort(dim=1).values, expected_nearest.sort(dim=1).values)


def test_ties_go_to_the_smallest_index_across_tiles():
    bank = unit(50, 8)
    bank[30] = bank[7]
    bank[44] = bank[7]
    for threads in (1, 3):
        _, nearest = entropy_and_neighbours(bank, 0.1, 1, max_chunk_bytes=2 * 4 * 4 * 4, threads=threads)
        assert nearest[[7, 30, 44], 0].tolist() == [30, 7, 7]


@pytest.mark.parametrize("k", [1, 4])
def test_worker_threads_give_the_same_result(k):
    bank = unit(700, 12)
    one = entropy_and_neighbours(bank, 0.07, k, max_chunk_bytes=2 * 4 * 64 * 64, threads=1)
    three = entropy_and_neighbours(bank, 0.07, k, max_chunk_bytes=2 * 4 * 64 * 64, threads=3)
    assert torch.allclose(one[0], three[0], rtol=1e-6)
    assert torch.equal(one[1].sort(dim=1).values, three[1].sort(dim=1).values)
    assert torch.get_num_threads() >= 1


def test_rows_of_very_different_norms_use_the_row_pass():
    bank = torch.randn(100, 8, generator=torch.Generator().manual_seed(3))  # norms far from 1
    entropy, nearest = entropy_and_neighbours(bank, 0.05, 1)
    expected_entropy, expected_nearest = plain(bank, 0.05, 1)
    assert torch.equal(entropy, expected_entropy) and torch.equal(nearest, expected_nearest)


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got 0"):
        entropy_and_neighbours(unit(10, 4), 0.1, threads=0)
