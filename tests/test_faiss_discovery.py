"""method.discovery="faiss": approximate entropy and neighbours against exact discovery.

The bank is real data at hand: scikit-learn's 1,797 digits (64 pixels), L2-normalised. Exact
discovery is :func:`and_plugin.curriculum.entropy_and_neighbours`.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import free_port

from and_plugin.curriculum import entropy_and_neighbours, select_anchors
from and_plugin.discovery_faiss import MISSING_FAISS, faiss_discovery, faiss_entropy_and_neighbours
from and_plugin.sharded import RowPartition

TAU = 0.1
needs_faiss = pytest.mark.skipif(
    __import__("importlib").util.find_spec("faiss") is None,
    reason="faiss is not installed (pip install 'and_plugin[faiss]'; the test extra installs it)",
)


def digits_bank() -> torch.Tensor:
    from sklearn.datasets import load_digits

    pixels = torch.from_numpy(load_digits().data).float()  # (1797, 64)
    return F.normalize(pixels - pixels.mean(dim=0), dim=1)


@pytest.fixture(scope="module")
def bank() -> torch.Tensor:
    return digits_bank()


@pytest.fixture(scope="module")
def exact(bank):
    return entropy_and_neighbours(bank, TAU, 5)


def recall(approx: torch.Tensor, exact: torch.Tensor, k: int) -> float:
    return float((approx[:, :k, None] == exact[:, None, :k]).any(dim=1).float().mean())


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


@needs_faiss
@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_agrees_with_exact_discovery(bank, exact, index):
    entropy, neighbours = faiss_entropy_and_neighbours(bank, TAU, 5, index=index, nprobe=8, threads=1)
    exact_entropy, exact_neighbours = exact
    assert entropy.dtype == torch.float32 and entropy.shape == (len(bank),)
    assert neighbours.dtype == torch.long and neighbours.shape == (len(bank), 5)
    assert not (neighbours == torch.arange(len(bank)).view(-1, 1)).any()  # self excluded
    assert recall(neighbours, exact_neighbours, 1) >= 0.95
    assert recall(neighbours, exact_neighbours, 5) >= 0.95
    for rounds in (1, 2, 3):  # the anchor sets of rounds 1..3 of 4
        assert jaccard(select_anchors(entropy, rounds / 4), select_anchors(exact_entropy, rounds / 4)) >= 0.95
    relative = (entropy - exact_entropy).abs() / exact_entropy.abs()
    assert float(relative.max()) < 0.02


@needs_faiss
def test_sampling_every_column_gives_the_exact_entropy(bank, exact):
    found = faiss_discovery(bank, TAU, 5, index="flat", tail_samples=len(bank), threads=1)
    assert torch.allclose(found.entropy, exact[0], atol=1e-4, rtol=0)
    assert torch.equal(found.neighbours[:, 0], exact[1][:, 0])
    assert float(found.entropy_bound().max()) == 0.0


@needs_faiss
@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_sampled_entropy_error_is_within_the_documented_bound(bank, exact, index):
    # A small sample (m = 128 of N = 1797) and a small head (K' = 16), so the tail matters.
    found = faiss_discovery(bank, TAU, 5, index=index, candidates=16, tail_samples=128, nprobe=2, threads=1)
    error = (found.entropy.double() - exact[0].double()).abs()
    bound = found.entropy_bound(delta=1e-6)  # all 1797 rows at once: probability ≥ 1 − 1797e-6
    assert bool((error > 1e-3).any())  # the tail is estimated, not summed
    assert bool((error <= bound + 1e-5).all()), float((error - bound).max())
    assert bool((found.entropy_bound(delta=0.5) < bound).all())  # tighter for a larger δ


@needs_faiss
def test_same_seed_same_result_other_seed_other_sample(bank):
    first = faiss_entropy_and_neighbours(bank, TAU, 5, seed=3, tail_samples=256, threads=1)
    again = faiss_entropy_and_neighbours(bank, TAU, 5, seed=3, tail_samples=256, threads=1)
    other = faiss_entropy_and_neighbours(bank, TAU, 5, seed=4, tail_samples=256, threads=1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@needs_faiss
def test_rows_split_across_ranks_give_the_whole_bank_result(bank):
    whole = faiss_entropy_and_neighbours(bank, TAU, 5, threads=1)
    parts = [RowPartition(len(bank), 3, rank) for rank in range(3)]
    split = [faiss_entropy_and_neighbours(bank, TAU, 5, queries=bank[p.start : p.stop], row_offset=p.start, threads=1)
             for p in parts]
    assert torch.equal(torch.cat([s[0] for s in split]), whole[0])
    assert torch.equal(torch.cat([s[1] for s in split]), whole[1])


def _rank_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        bank = digits_bank()  # the replicated layout: every rank holds the whole bank
        part = RowPartition.current(len(bank))
        entropy, neighbours = faiss_entropy_and_neighbours(
            bank, TAU, 5, queries=bank[part.start : part.stop], row_offset=part.start, threads=1)
        gathered = [None] * world
        dist.all_gather_object(gathered, (entropy, neighbours))
        if rank == 0:
            torch.save(gathered, out)
    finally:
        dist.destroy_process_group()


@needs_faiss
@pytest.mark.distributed
def test_each_rank_discovers_its_rows_under_torch_distributed(tmp_path, bank):
    out = str(tmp_path / "gathered.pt")
    mp.spawn(_rank_worker, args=(2, free_port(), out), nprocs=2, join=True)
    gathered = torch.load(out, weights_only=False)
    whole = faiss_entropy_and_neighbours(bank, TAU, 5, threads=1)
    assert torch.equal(torch.cat([g[0] for g in gathered]), whole[0])
    assert torch.equal(torch.cat([g[1] for g in gathered]), whole[1])


@needs_faiss
def test_bad_arguments_are_refused_with_one_line(bank):
    small = bank[:10]
    with pytest.raises(ValueError, match=r"^neighbours must be < the number of samples N = 10, got 10$"):
        faiss_entropy_and_neighbours(small, TAU, 10)
    with pytest.raises(ValueError, match=r"^discovery_kwargs keys must be among \[.*'nprobe'.*\], got 'nprob'$"):
        faiss_entropy_and_neighbours(bank, TAU, 5, nprob=8)
    with pytest.raises(ValueError, match=r"^candidates must be an integer > neighbours = 5, got 5$"):
        faiss_entropy_and_neighbours(bank, TAU, 5, candidates=5)
    with pytest.raises(ValueError, match=r"^index must be one of \['ivf', 'hnsw', 'flat'\], got 'pq'$"):
        faiss_entropy_and_neighbours(bank, TAU, 5, index="pq")
    with pytest.raises(ValueError, match=r"^row_offset must be an integer in \[0, N - Q\] = \[0, 1787\], got 1790$"):
        faiss_entropy_and_neighbours(bank, TAU, 5, queries=bank[:10], row_offset=1790)


def test_missing_faiss_names_the_install(monkeypatch, bank):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    with pytest.raises(ImportError) as error:
        faiss_entropy_and_neighbours(bank, TAU, 5)
    assert str(error.value) == "method.discovery='faiss' needs faiss: pip install 'and_plugin[faiss]' (or faiss-gpu)"
    assert str(error.value) == MISSING_FAISS
    from and_plugin import ConfigError, load_config

    with pytest.raises(ConfigError) as refused:  # when the config is read, before any training
        load_config(None, ["method.discovery=faiss"])
    assert str(refused.value) == MISSING_FAISS


@needs_faiss
def test_the_curriculum_runs_faiss_discovery_with_its_kwargs(bank, exact):
    from and_plugin import EntropyCurriculum

    curriculum = EntropyCurriculum(rounds=4, neighbours=5, temperature=TAU, discovery="faiss",
                                   discovery_kwargs={"nprobe": 8, "threads": 1})
    state = curriculum.discover(bank, round=1)
    entropy, neighbours = faiss_entropy_and_neighbours(bank, TAU, 5, nprobe=8, threads=1)
    assert torch.equal(state.entropy, entropy) and torch.equal(state.neighbours, neighbours)
    assert jaccard(state.anchor_mask, select_anchors(exact[0], 0.25)) >= 0.95
