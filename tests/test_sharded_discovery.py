"""Discovery on several ranks equals discovery in one process: the same neighbours and anchors.

Each rank computes the entropy and neighbours of its own rows (and_plugin.sharded.discovery)
and its share of the anchors (and_plugin.sharded.selection); concatenated in rank order they
must be what curriculum.entropy_and_neighbours + select_anchors return on the whole bank.
W gloo processes run every case once and save their local results; the test compares.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import free_port

from and_plugin.curriculum import (
    EntropyCurriculum,
    LabelFilteredCurriculum,
    entropy_and_neighbours,
    select_anchors,
)
from and_plugin.sharded import RowPartition, distributed_entropy_and_neighbours, select_anchors_distributed
from and_plugin.sharded.selection import order_keys

TAU = 0.1
SMALL_TILES = 2 * 4 * 16 * 16  # 16 x 16 float32 tiles: several tiles per key block
FRACTIONS = (0.0, 0.25, 0.5, 1.0)


def unit(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1).float()


def with_duplicates(n: int = 150) -> torch.Tensor:
    """A bank with exact ties: rows 7, 50, 120 (and 3, 149; 0, 1) are copies of each other."""
    bank = unit(n, seed=3)
    bank[[50, 120]] = bank[7].clone()
    bank[149] = bank[3].clone()
    bank[1] = bank[0].clone()
    return bank


def spread() -> torch.Tensor:
    """Row norms 1 and 0.05: too far apart for the shared shift at τ = 0.01 (the online fallback)."""
    bank = unit(90, seed=5)
    bank[:9] *= 0.05
    return bank


BANKS = {"random": lambda: unit(203), "nine": lambda: unit(9, seed=1), "ties": with_duplicates, "spread": spread}
#: (bank, k, τ, max_chunk_bytes) of every discovery case; each runs in both layouts.
CASES = [
    ("random", 1, TAU, None), ("random", 3, TAU, None), ("random", 1, TAU, SMALL_TILES), ("random", 3, TAU, SMALL_TILES),
    ("nine", 1, TAU, None), ("nine", 3, TAU, None),
    # One tile in one process (N < 512): there, as on the ranks, each row's similarities are its own
    # row of a matrix product, so copies tie exactly. With several tiles the single-process kernel
    # computes (x_j·s)·x_i for earlier blocks, and copies differ in the last bit.
    ("ties", 1, TAU, None), ("ties", 3, TAU, None),
    ("spread", 1, 0.01, SMALL_TILES), ("spread", 3, 0.01, None),
]


def similarities(bank: torch.Tensor, nearest: torch.Tensor) -> torch.Tensor:
    """x_i·x_j of each row's chosen neighbours (N, k), in float64, in the order chosen."""
    return (bank[:, None, :] * bank[nearest]).sum(-1)


def crafted_entropies() -> torch.Tensor:
    """Many ties: 61 values from 6 levels, with ±0.0, ±inf and a NaN among them."""
    levels = torch.tensor([-1.5, -0.0, 0.0, 0.25, 2.0, float("inf")], dtype=torch.float64)
    values = levels[torch.randint(0, 6, (61,), generator=torch.Generator().manual_seed(2))]
    values[[5, 40]] = float("-inf")
    values[17] = float("nan")
    return values.float()


def run_cases(partition_of, world: int, rank: int) -> dict:
    """Every case on this rank's rows: {name: local results}."""
    out: dict = {}
    for name, k, tau, budget in CASES:
        bank = BANKS[name]()
        part = partition_of(bank.shape[0])
        rows = bank[part.start : part.stop]
        for layout, full in (("sharded", None), ("replicated", bank)):
            entropy, nearest = distributed_entropy_and_neighbours(rows, part, tau, k, full_bank=full, max_chunk_bytes=budget)
            masks = [select_anchors_distributed(entropy, part, f) for f in FRACTIONS]
            out[(name, k, budget, layout)] = (entropy, nearest, masks)
    entropies = crafted_entropies()
    part = partition_of(entropies.numel())
    local = entropies[part.start : part.stop]
    out["crafted"] = [select_anchors_distributed(local, part, s / 61) for s in range(62)]
    bank = unit(203)
    labels = torch.arange(203) % 3
    part = partition_of(203)
    rows = bank[part.start : part.stop]
    states = {}
    for round in (1, 4):
        states[("entropy", round)] = EntropyCurriculum(4, 2).discover_distributed(rows, part, round, labels=labels)
        states[("filtered", round)] = LabelFilteredCurriculum(4, 1).discover_distributed(rows, part, round, labels, bank)
    out["states"] = {key: state.state_dict() for key, state in states.items()}
    return out


def _worker(rank: int, world: int, port: int, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        torch.save(run_cases(RowPartition.current, world, rank), os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def single_process_answers() -> dict:
    """The same cases by today's single-process functions on the whole bank."""
    out: dict = {}
    for name, k, tau, budget in CASES:
        entropy, nearest = entropy_and_neighbours(BANKS[name](), tau, k, budget)
        out[(name, k, budget)] = (entropy, nearest, [select_anchors(entropy, f) for f in FRACTIONS])
    entropies = crafted_entropies()
    out["crafted"] = [select_anchors(entropies, s / 61) for s in range(62)]
    bank, labels = unit(203), torch.arange(203) % 3
    for round in (1, 4):
        out[("entropy", round)] = EntropyCurriculum(4, 2).discover(bank, round, labels=labels)
        out[("filtered", round)] = LabelFilteredCurriculum(4, 1).discover(bank, round, labels)
    return out


def concatenate(per_rank: list) -> dict:
    """Rank results joined in rank order (= index order)."""
    joined: dict = {}
    for key, value in per_rank[0].items():
        if key == "states":
            joined[key] = value
        elif key == "crafted":
            joined[key] = [torch.cat([r[key][i] for r in per_rank]) for i in range(len(value))]
        else:
            joined[key] = (
                torch.cat([r[key][0] for r in per_rank]),
                torch.cat([r[key][1] for r in per_rank]),
                [torch.cat([r[key][2][i] for r in per_rank]) for i in range(len(FRACTIONS))],
            )
    return joined


def assert_same_as_single_process(joined: dict, states_per_rank: list) -> None:
    expected = single_process_answers()
    for name, k, _, budget in CASES:
        want_entropy, want_nearest, want_masks = expected[(name, k, budget)]
        for layout in ("sharded", "replicated"):
            entropy, nearest, masks = joined[(name, k, budget, layout)]
            case = (name, k, budget, layout)
            assert torch.allclose(entropy, want_entropy, rtol=1e-5, atol=1e-6), case
            if k == 1 or name != "ties":
                assert torch.equal(nearest, want_nearest), case
            else:  # k > 1 exact ties: one process keeps topk's unspecified tie order; the ranks the
                # smallest index. Which copy is taken may differ, its similarity may not.
                bank = BANKS[name]().double()
                assert torch.equal(similarities(bank, nearest), similarities(bank, want_nearest)), case
                assert not torch.equal(nearest, want_nearest)  # the case does hold such ties
            for fraction, mask, want in zip(FRACTIONS, masks, want_masks):
                assert torch.equal(mask, want), (case, fraction)
    for got, want in zip(joined["crafted"], expected["crafted"]):
        assert torch.equal(got, want)
    for states in states_per_rank:  # every rank holds the whole state
        for key, state in states.items():
            want = expected[key]
            assert state["round"] == want.round
            assert torch.equal(state["anchor_mask"], want.anchor_mask), key
            assert torch.equal(state["neighbours"], want.neighbours), key
            assert torch.allclose(state["entropy"], want.entropy, rtol=1e-5), key
            assert state["consistency"] == want.consistency, key


def test_one_process_equals_the_single_process_functions():
    """W = 1 outside torch.distributed: both layouts, k = 1 and 3, ties, the fallback, the curricula."""
    result = run_cases(lambda n: RowPartition(n), 1, 0)
    assert_same_as_single_process(concatenate([result]), [result["states"]])


@pytest.mark.distributed
@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])  # 4 process starts: slow
def test_ranks_equal_one_process(tmp_path, world):
    """W gloo ranks (N = 9 on 4 ranks: rows 3, 3, 3, 0) give the single-process neighbours and anchors."""
    mp.spawn(_worker, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    if world == 4:
        assert RowPartition(9, 4).counts() == [3, 3, 3, 0]
    assert_same_as_single_process(concatenate(per_rank), [r["states"] for r in per_rank])


def test_duplicate_rows_tie_to_the_smallest_index():
    """Rows 7, 50, 120 are copies: for k = 1 each one's neighbour is the smallest other copy,
    for k = 3 the copies come first in index order, and the copies' entropies are equal."""
    bank = with_duplicates()
    entropy, nearest = distributed_entropy_and_neighbours(bank, RowPartition(150), TAU, 1, max_chunk_bytes=SMALL_TILES)
    assert nearest[[7, 50, 120, 0, 1], 0].tolist() == [50, 7, 7, 1, 0]
    assert entropy[7] == entropy[50] == entropy[120]
    _, nearest = distributed_entropy_and_neighbours(bank, RowPartition(150), TAU, 3)
    assert nearest[7, :2].tolist() == [50, 120] and nearest[120, :2].tolist() == [7, 50]


def test_order_keys_sort_as_the_floats():
    values = crafted_entropies().double()
    assert torch.equal(torch.sort(order_keys(values), stable=True).indices, torch.sort(values, stable=True).indices)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: select_anchors_distributed(torch.zeros(4), RowPartition(4), 1.5), "fraction must be in [0, 1], got 1.5"),
        (lambda: select_anchors_distributed(torch.zeros(3), RowPartition(4), 0.5), "local_entropy"),
        (lambda: distributed_entropy_and_neighbours(unit(5), RowPartition(10, 2, 0), TAU, 1),
         "partition.world must be 1 outside an initialised torch.distributed group, got 2"),
        (lambda: distributed_entropy_and_neighbours(unit(4), RowPartition(5), TAU, 1), "local_rows"),
        (lambda: distributed_entropy_and_neighbours(unit(5), RowPartition(5), TAU, 5), "k must be < the number of samples N = 5, got 5"),
        (lambda: distributed_entropy_and_neighbours(unit(5), RowPartition(5), TAU, 1, full_bank=unit(6)), "full_bank"),
    ],
)
def test_wrong_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        call()
