"""Memory bank: Eq 8 by hand, duplicates, persistence, bad input."""

import pytest
import torch
import torch.nn.functional as F

from and_plugin import MemoryBank


def test_initial_rows_are_unit_vectors():
    bank = MemoryBank(100, 16, seed=3)
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(100), atol=1e-6)


def test_update_applies_eq8_by_hand():
    bank = MemoryBank(4, 2, memory_momentum=0.5, dtype=torch.float64)
    bank.bank.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0]], dtype=torch.float64))
    x = torch.tensor([[0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    bank.update(torch.tensor([0, 3]), x)
    # row 0: 0.5*(1,0) + 0.5*(0,1) = (0.5, 0.5) -> (1/sqrt2, 1/sqrt2)
    assert bank.bank[0].tolist() == pytest.approx([2**-0.5, 2**-0.5])
    # row 3: 0.5*(0,-1) + 0.5*(0.6,0.8) = (0.3, -0.1) -> /sqrt(0.1)
    norm = (0.3**2 + 0.1**2) ** 0.5
    assert bank.bank[3].tolist() == pytest.approx([0.3 / norm, -0.1 / norm])
    assert bank.bank[1].tolist() == [0.0, 1.0] and bank.bank[2].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("eta", [0.0, 1.0, 0.3])
def test_momentum_extremes(eta):
    bank = MemoryBank(5, 3, memory_momentum=eta, dtype=torch.float64, seed=1)
    before = bank.bank.clone()
    x = F.normalize(torch.randn(1, 3, dtype=torch.float64), dim=1)
    bank.update(torch.tensor([2]), x)
    expected = F.normalize((1 - eta) * before[2] + eta * x[0], dim=0)
    assert torch.allclose(bank.bank[2], expected)


def test_repeated_indices_are_averaged_and_order_independent():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1)
    a = MemoryBank(6, 3, dtype=torch.float64, seed=2)
    b = MemoryBank(6, 3, dtype=torch.float64, seed=2)
    start = a.bank.clone()
    a.update(torch.tensor([1, 4, 1, 0]), x)
    b.update(torch.tensor([0, 1, 1, 4]), x[[3, 2, 0, 1]])
    assert torch.equal(a.bank, b.bank)
    expected = F.normalize(0.5 * start[1] + 0.5 * (x[0] + x[2]) / 2, dim=0)
    assert torch.allclose(a.bank[1], expected)


def test_state_dict_round_trip_and_renormalisation():
    bank = MemoryBank(8, 4, seed=5)
    bank.update(torch.tensor([1]), torch.randn(1, 4))
    state = bank.state_dict()
    other = MemoryBank(8, 4, seed=99)
    other.load_state_dict(state)
    assert torch.equal(other.bank, bank.bank)
    state["bank"] = state["bank"] * 3.0  # unnormalised rows are re-normalised on load
    other.load_state_dict(state)
    assert torch.allclose(other.bank.norm(dim=1), torch.ones(8), atol=1e-6)


def test_corrupt_bank_is_refused():
    bank = MemoryBank(3, 2)
    state = {"bank": torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])}
    with pytest.raises(ValueError, match="non-finite or all-zero rows"):
        bank.load_state_dict(state)
    with pytest.raises(ValueError, match=r"bank must have shape \(3, 2\), got \(4, 2\)"):
        bank.load_state_dict({"bank": torch.ones(4, 2)})


def test_bfloat16_storage():
    bank = MemoryBank(10, 8, dtype=torch.bfloat16)
    bank.update(torch.tensor([0, 1]), torch.randn(2, 8))
    assert bank.bank.dtype == torch.bfloat16
    assert torch.allclose(bank.bank.float().norm(dim=1), torch.ones(10), atol=1e-2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 0, "dim": 4}, "size must be an integer >= 1, got 0"),
        ({"size": 4, "dim": 0}, "dim must be an integer >= 1, got 0"),
        ({"size": 4, "dim": 2, "memory_momentum": 1.5}, r"memory_momentum must be in \[0.0, 1.0\], got 1.5"),
        ({"size": 4, "dim": 2, "memory_momentum": -0.1}, r"memory_momentum must be in \[0.0, 1.0\], got -0.1"),
        ({"size": 4, "dim": 2, "dtype": torch.int64}, "dtype must be one of"),
    ],
)
def test_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MemoryBank(**kwargs)


def test_bad_updates():
    bank = MemoryBank(5, 3)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\), got 5"):
        bank.update(torch.tensor([5]), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"features must have shape \(2, 3\), got \(2, 4\)"):
        bank.update(torch.tensor([0, 1]), torch.randn(2, 4))
    with pytest.raises(ValueError, match="indices must have an integer dtype"):
        bank.update(torch.tensor([0.0]), torch.randn(1, 3))
    with pytest.raises(ValueError, match="features must be finite"):
        bank.update(torch.tensor([0]), torch.full((1, 3), float("nan")))


def test_three_repeats_and_singles_equal_eq8_with_the_mean():
    """Every distinct index is written once, with the mean of its features (float64, by hand)."""
    bank = MemoryBank(7, 3, memory_momentum=0.3, dtype=torch.float64, seed=4)
    start = bank.bank.clone()
    x = F.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64), dim=1)
    indices = torch.tensor([5, 2, 5, 6, 5, 0])
    bank.update(indices, x)
    for i in range(7):
        rows = [b for b in range(6) if int(indices[b]) == i]
        if not rows:
            assert torch.equal(bank.bank[i], start[i])
            continue
        mean = sum(x[b] for b in rows) / len(rows)
        assert torch.allclose(bank.bank[i], F.normalize(0.7 * start[i] + 0.3 * mean, dim=0), atol=1e-15)


def test_negative_and_out_of_range_indices_are_named_in_one_check():
    bank = MemoryBank(5, 3)
    before = bank.bank.clone()
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\), got -2"):
        bank.update(torch.tensor([1, -2]), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\), got 7"):
        bank.update(torch.tensor([1, 7]), torch.full((2, 3), float("inf")))  # the index is named first
    with pytest.raises(ValueError, match="features must be finite"):
        bank.update(torch.tensor([1, 2]), torch.tensor([[0.0, 1.0, 0.0], [float("inf"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"indices must be a 1-D integer tensor, got \(1, 2\)"):
        bank.update(torch.tensor([[1, 2]]), torch.randn(2, 3))
    assert torch.equal(bank.bank, before)  # nothing written by a refused update


@pytest.mark.parametrize("size, dim", [(37, 5), (1001, 8), (131_073, 16)])
def test_the_blockwise_initial_rows_are_one_seeded_randn_call(size, dim):
    """The bank's start (made block by block, for the peak memory and for shards) is the plain formula."""
    from and_plugin.memory_bank import initial_rows

    generator = torch.Generator().manual_seed(4)
    expected = torch.nn.functional.normalize(torch.randn(size, dim, generator=generator), dim=1)
    assert torch.equal(MemoryBank(size, dim, seed=4).bank, expected)
    assert torch.equal(MemoryBank(size, dim, seed=4, dtype=torch.float16).bank, expected.half())
    for start, stop in [(0, size // 3), (size // 3, size), (size - 1, size)]:
        assert torch.equal(initial_rows(size, dim, 4, start, stop), expected[start:stop])
