"""The symmetric tiled refresh (and_plugin.kernels.refresh_tiles) against the plain reference of
Eq 1 and 5 (curriculum.reference_entropy_and_neighbours): entropy, neighbours, ties, workers."""

import math

import pytest
import torch
import torch.nn.functional as F

from and_plugin.curriculum import entropy_and_neighbours, reference_entropy_and_neighbours
from and_plugin.kernels.refresh_tiles import entropy_and_neighbours_tiled, tile_side


def unit(n, d, dtype=torch.float32, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1).to(dtype)


def plain(bank, tau, k):
    return reference_entropy_and_neighbours(bank, tau, k, 1 << 30)


def neighbour_similarities(bank, nearest):
    """s_ij of each chosen neighbour, sorted: equal for two answers that differ only in tie order."""
    keys = bank.double()
    return (keys[:, None, :] * keys[nearest]).sum(-1).sort(dim=1).values


def test_reference_equals_eq5_and_eq1_by_hand():
    """The reference itself, against explicit sums in float64 (entropy) and a brute-force argsort."""
    bank = unit(17, 4, torch.float64, seed=7)
    tau = 0.2
    entropy, nearest = reference_entropy_and_neighbours(bank, tau, 3, max_chunk_bytes=4 * 8 * 17 * 5)  # 5-row blocks
    for i in range(17):
        weights = [math.exp(float(bank[i] @ bank[j]) / tau) for j in range(17)]
        total = sum(weights)
        assert float(entropy[i]) == pytest.approx(-sum(w / total * math.log(w / total) for w in weights), rel=1e-12)
        others = sorted((j for j in range(17) if j != i), key=lambda j: -float(bank[i] @ bank[j]))
        assert sorted(nearest[i].tolist()) == sorted(others[:3])


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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n, tile", [(7, 3), (64, 8), (101, 16), (130, 64), (50, 50), (50, 64)])
@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_kernel_equals_reference_over_shapes_tiles_and_k(dtype, n, tile, k, tau):
    """N a multiple of the tile or not, one tile or many, several k and τ, both dtypes."""
    bank = unit(n, 6, dtype, seed=n + k)
    itemsize = 8 if dtype == torch.float64 else 4
    budget = 2 * itemsize * tile * tile
    assert tile_side(n, budget, dtype, cuda=False) == min(tile, n)
    got = entropy_and_neighbours_tiled(bank, tau, k, budget, 1, dtype)
    assert got is not None
    expected = plain(bank, tau, k)
    tolerance = 1e-11 if dtype == torch.float64 else 1e-4
    assert got[0].dtype == expected[0].dtype == dtype
    assert torch.allclose(got[0], expected[0], rtol=tolerance, atol=tolerance)
    assert got[1].shape == (n, k) and got[1].dtype == torch.long
    assert torch.equal(got[1].sort(dim=1).values, expected[1].sort(dim=1).values)


@pytest.mark.parametrize("k", [1, 3])
def test_ties_within_and_across_tiles(k):
    """Exact duplicates inside one tile and in different tiles: the chosen neighbours are as
    similar as the reference's. (Which twin wins may differ: BLAS can round the same dot product
    one ulp apart in two tile positions, so these are not exact ties of the computed values.)"""
    bank = unit(45, 5, torch.float64, seed=3)
    bank[[4, 12, 31, 44]] = bank[9].clone()  # 9's twins: 12 in its tile of 8 rows; 4, 31, 44 in others
    bank[20] = bank[21].clone()
    entropy, nearest = entropy_and_neighbours_tiled(bank, 0.1, k, 2 * 8 * 8 * 8, 1, torch.float64)
    expected_entropy, expected_nearest = plain(bank, 0.1, k)
    assert torch.allclose(entropy, expected_entropy, rtol=1e-11, atol=1e-11)
    assert torch.allclose(neighbour_similarities(bank, nearest), neighbour_similarities(bank, expected_nearest), atol=1e-12)
    assert not (nearest == torch.arange(45)[:, None]).any()  # never oneself, even with a twin
    twins = {9, 4, 12, 31, 44}
    for i in twins:
        assert set(nearest[i].tolist()) <= twins - {i} or k > len(twins) - 1
    assert nearest[20, 0] == 21 and nearest[21, 0] == 20


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
    assert entropy_and_neighbours_tiled(bank, 0.05, 1, 1 << 20, 1, torch.float32) is None  # the shift could underflow
    entropy, nearest = entropy_and_neighbours(bank, 0.05, 1)
    expected_entropy, expected_nearest = plain(bank, 0.05, 1)
    assert torch.equal(entropy, expected_entropy) and torch.equal(nearest, expected_nearest)


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got 0"):
        entropy_and_neighbours(unit(10, 4), 0.1, threads=0)
