"""ANDMiner against brute force, in every way pytorch-metric-learning calls a miner.

Modelled on PML's own miner tests (tests/miners/test_*.py there): loop over dtypes, compute
the expected pair sets with plain Python loops over (query, reference row), compare sets;
check the tuple format, the dtype and device of the indices and the empty output.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss, CrossBatchMemory, NTXentLoss

from and_plugin import ANDMiner, EntropyCurriculum, MemoryBank, NeighbourhoodLoss, RoundState

TEST_DTYPES = (torch.float16, torch.float32, torch.float64)
# N = 8, k = 2. Anchors 1 (neighbours 4, 5) and 3 (neighbours 0, 1).
NEIGHBOURS = [[1, 2], [4, 5], [0, 3], [0, 1], [5, 0], [4, 3], [7, 1], [6, 2]]
ANCHORS = [1, 3]


def state_with(anchors, neighbours, n):
    mask = torch.zeros(n, dtype=torch.bool)
    mask[anchors] = True
    return RoundState(1, mask, torch.as_tensor(neighbours), torch.zeros(n))


STATE = state_with(ANCHORS, NEIGHBOURS, 8)


def positive_set(i, state):
    if state is None:
        return {i}
    return {i} | (set(state.neighbours[i].tolist()) if bool(state.anchor_mask[i]) else set())


def brute_force(labels, ref_labels, state, include_self=True, self_reference=False):
    """Expected positive pairs and eligible negatives, by plain loops as in PML's tests."""
    positives, negatives = set(), set()
    for q, i in enumerate(labels.tolist()):
        members = positive_set(i, state)
        for r, j in enumerate(ref_labels.tolist()):
            if self_reference and r == q:
                continue  # get_all_pairs_indices never pairs an embedding with itself
            if j in members:
                if include_self or j != i:
                    positives.add((q, r))
            else:
                negatives.add((q, r))
    return positives, negatives


def pairs(a, b):
    return set(zip(a.tolist(), b.tolist()))


REFERENCES = {
    "bank": torch.arange(8),
    "permuted": torch.tensor([5, 2, 7, 0, 3, 6, 1, 4]),
    "partial": torch.tensor([4, 0, 6]),  # neighbours 5 and 1 of the batch's anchors are missing
    "duplicated": torch.tensor([3, 0, 1, 3, 4, 5, 1, 0, 3]),  # a CrossBatchMemory queue
}


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reference", list(REFERENCES))
@pytest.mark.parametrize("dtype", TEST_DTYPES)
def test_pairs_match_brute_force_against_any_reference(reference, include_self, dtype):
    torch.manual_seed(0)
    labels = torch.tensor([3, 2, 1, 6])
    ref_labels = REFERENCES[reference]
    embeddings = F.normalize(torch.randn(4, 5), dim=1).to(dtype)
    ref_emb = F.normalize(torch.randn(len(ref_labels), 5), dim=1).to(dtype)
    want_pos, want_neg = brute_force(labels, ref_labels, STATE, include_self)
    miner = ANDMiner(round_state=STATE, include_self=include_self, negatives="all")
    a1, p, a2, n = miner(embeddings, labels, ref_emb, ref_labels)
    for t in (a1, p, a2, n):
        assert t.dtype == torch.long and t.device == embeddings.device and t.dim() == 1
    assert pairs(a1, p) == want_pos and len(a1) == len(want_pos)
    assert pairs(a2, n) == want_neg and len(a2) == len(want_neg)
    assert miner.num_pos_pairs == len(want_pos) and miner.num_neg_pairs == len(want_neg)


def test_int32_labels_give_the_same_pairs():
    emb, ref = torch.randn(3, 4), torch.randn(8, 4)
    miner = ANDMiner(round_state=STATE, negatives="all")
    wide = miner(emb, torch.tensor([1, 3, 6]), ref, REFERENCES["permuted"])
    narrow = miner(emb, torch.tensor([1, 3, 6], dtype=torch.int32), ref, REFERENCES["permuted"].int())
    assert all(torch.equal(a, b) for a, b in zip(wide, narrow))


def test_a_queue_copy_of_a_positive_is_a_positive_never_a_negative():
    labels = torch.tensor([1])  # anchor 1: P = {1, 4, 5}
    ref_labels = torch.tensor([1, 7, 4, 1, 5, 4])
    a1, p, a2, n = ANDMiner(round_state=STATE, negatives="all")(torch.randn(1, 3), labels, torch.randn(6, 3), ref_labels)
    assert sorted(p.tolist()) == [0, 2, 3, 4, 5] and n.tolist() == [1]


@pytest.mark.parametrize("include_self", [True, False])
def test_batch_as_its_own_reference_never_pairs_an_embedding_with_itself(include_self):
    labels = torch.tensor([3, 0, 1, 5, 4, 7])
    embeddings = F.normalize(torch.randn(6, 4), dim=1)
    miner = ANDMiner(round_state=STATE, include_self=include_self, negatives="all")
    a1, p, a2, n = miner(embeddings, labels)
    want_pos, want_neg = brute_force(labels, labels, STATE, include_self, self_reference=True)
    assert pairs(a1, p) == want_pos and pairs(a2, n) == want_neg
    assert all(q != r for q, r in pairs(a1, p) | pairs(a2, n))


@pytest.mark.parametrize("include_self", [True, False])
def test_two_views_of_a_sample_are_positives_never_negatives(include_self):
    """lightly-style two views: indices [i..., i...] in one batch."""
    indices = torch.tensor([0, 2, 6, 7])
    labels = torch.cat([indices, indices])
    embeddings = F.normalize(torch.randn(8, 4), dim=1)
    a1, p, a2, n = ANDMiner(include_self=include_self, negatives="all")(embeddings, labels)  # round 0
    other_view = {(q, (q + 4) % 8) for q in range(8)}
    if include_self:
        assert pairs(a1, p) == other_view
    else:
        assert pairs(a1, p) == set()
    negatives = pairs(a2, n)
    assert negatives.isdisjoint(other_view) and all(q != r for q, r in negatives)
    assert negatives == {(q, r) for q in range(8) for r in range(8) if labels[q] != labels[r]}


def test_include_self_false_removes_the_own_row_from_both_lists():
    bank = torch.randn(8, 4)
    labels = torch.tensor([1, 2])  # 1 is an anchor, 2 is not
    a1, p, a2, n = ANDMiner(round_state=STATE, include_self=False, negatives="all")(
        torch.randn(2, 4), labels, bank, torch.arange(8)
    )
    assert pairs(a1, p) == {(0, 4), (0, 5)}  # the non-anchor has no positive left
    assert (0, 1) not in pairs(a2, n) and (1, 2) not in pairs(a2, n)
    assert len(a2) == 2 * 8 - 3 - 1


def test_round_zero_before_discovery_yields_instance_pairs():
    bank = MemoryBank(30, 8)
    curriculum = EntropyCurriculum(rounds=1, selection="one_off")
    miner = ANDMiner(curriculum, negatives="all")
    idx = torch.tensor([4, 9, 0])
    a1, p, a2, n = miner(torch.randn(3, 8), idx, bank.bank, torch.arange(30))
    assert pairs(a1, p) == {(0, 4), (1, 9), (2, 0)} and len(a2) == 3 * 29
    curriculum.discover(bank, 1)  # now everyone is an anchor: the miner follows without rebuilding
    a1, p, _, _ = miner(torch.randn(3, 8), idx, bank.bank, torch.arange(30))
    want = {(q, int(i)) for q, i in enumerate(idx)} | {(q, int(curriculum.state.neighbours[i, 0])) for q, i in enumerate(idx)}
    assert pairs(a1, p) == want


def test_empty_output():
    for dtype in TEST_DTYPES:
        embeddings = torch.randn(4, 6).to(dtype)
        labels = torch.tensor([0, 2, 4, 6])  # no anchors among them
        a1, p, a2, n = ANDMiner(round_state=STATE, include_self=False, negatives="none")(
            embeddings, labels, torch.randn(8, 6).to(dtype), torch.arange(8)
        )
        assert len(a1) == len(p) == len(a2) == len(n) == 0
        assert all(t.dtype == torch.long for t in (a1, p, a2, n))
        # No row of the reference is related: positives empty, every row a negative.
        a1, p, a2, n = ANDMiner(round_state=STATE)(embeddings, labels, torch.randn(2, 6).to(dtype), torch.tensor([7, 5]))
        assert len(a1) == 0 and pairs(a2, n) == set(itertools.product(range(4), range(2)))


@pytest.mark.parametrize("reference", ["bank", "duplicated", "batch"])
def test_sampled_negatives_are_eligible_distinct_and_bounded(reference):
    torch.manual_seed(0)
    labels = torch.tensor([3, 2, 1, 6])
    if reference == "batch":
        ref_labels = labels
    else:
        ref_labels = REFERENCES[reference]
    embeddings = torch.randn(4, 5)
    ref_emb = embeddings if reference == "batch" else torch.randn(len(ref_labels), 5)
    _, eligible = brute_force(labels, ref_labels, STATE, self_reference=reference == "batch")
    for m in (1, 3, 100):
        miner = ANDMiner(round_state=STATE, negatives="sampled", num_negatives=m)
        _, _, a2, n = miner(embeddings, labels, ref_emb, ref_labels) if reference != "batch" else miner(embeddings, labels)
        got = list(zip(a2.tolist(), n.tolist()))
        assert len(set(got)) == len(got) and set(got) <= eligible
        for q in range(4):
            available = sum(1 for a, _ in eligible if a == q)
            assert sum(1 for a, _ in got if a == q) == min(m, available)


def test_sampled_negatives_are_uniform():
    torch.manual_seed(0)
    miner = ANDMiner(negatives="sampled", num_negatives=2)  # round 0: every other row eligible
    counts = torch.zeros(10)
    for _ in range(2000):
        _, _, _, n = miner(torch.randn(1, 3), torch.tensor([0]), torch.randn(10, 3), torch.arange(10))
        counts += torch.bincount(n, minlength=10)
    assert counts[0] == 0
    expected, variance = 2000 * 2 / 9, 2000 * (2 / 9) * (7 / 9)
    chi_square = float(((counts[1:] - expected) ** 2 / variance).sum())
    assert chi_square < 26.1  # 8 degrees of freedom, p = 0.001


def test_sampled_negatives_against_a_large_bank_stay_bounded_by_default():
    """The default never emits B x N pairs: 50k rows, 128 queries -> at most 128 x num_negatives."""
    torch.manual_seed(0)
    size, batch = 50_000, 128
    miner = ANDMiner()
    assert miner.negatives == "sampled"
    labels = torch.randperm(size)[:batch]
    a1, p, a2, n = miner(torch.randn(batch, 4), labels, torch.randn(size, 4), torch.arange(size))
    assert pairs(a1, p) == {(q, int(i)) for q, i in enumerate(labels)}
    assert len(a2) <= batch * miner.num_negatives and len(a2) >= 0.99 * batch * miner.num_negatives
    assert not (labels[a2] == n).any()


@pytest.mark.parametrize("distance", [LpDistance(), CosineSimilarity()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hardest_negatives_are_the_nearest_eligible_rows(distance, dtype):
    torch.manual_seed(0)
    labels = torch.tensor([3, 2, 1, 6])
    ref_labels = REFERENCES["duplicated"]
    embeddings = torch.randn(4, 5, dtype=dtype)
    ref_emb = torch.randn(len(ref_labels), 5, dtype=dtype)
    mat = distance(embeddings, ref_emb)
    _, eligible = brute_force(labels, ref_labels, STATE)
    m = 2
    miner = ANDMiner(round_state=STATE, negatives="hardest", num_negatives=m, distance=distance)
    _, _, a2, n = miner(embeddings, labels, ref_emb, ref_labels)
    want = set()
    for q in range(4):
        rows = [r for a, r in eligible if a == q]
        rows.sort(key=lambda r: float(mat[q, r]), reverse=distance.is_inverted)
        want |= {(q, r) for r in rows[:m]}
    assert pairs(a2, n) == want


def test_bfloat16_bank_works_with_the_miner_and_a_pml_loss():
    torch.manual_seed(0)
    bank = MemoryBank(40, 8, dtype=torch.bfloat16)
    curriculum = EntropyCurriculum(rounds=1, selection="one_off")
    curriculum.discover(bank, 1)
    feats = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    idx = torch.tensor([0, 1, 2, 3])
    for negatives in ("sampled", "hardest"):
        tup = ANDMiner(curriculum, negatives=negatives, num_negatives=5)(feats, idx, bank.bank, torch.arange(40))
        keys = bank.bank.to(feats.dtype)  # PML's distances need one dtype: cast the bank
        loss = NTXentLoss(0.1)(feats, idx, tup, ref_emb=keys, ref_labels=torch.arange(40))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


def test_ntxent_with_miner_equals_instance_loss_when_no_anchor():
    """With no anchors and all negatives, NTXent over the miner's pairs is exactly -log p_ii of Eq 2."""
    torch.manual_seed(0)
    n, tau = 20, 0.1
    bank = MemoryBank(n, 8, seed=1)
    miner = ANDMiner(round_state=state_with([], [[(i + 1) % n] for i in range(n)], n), negatives="all")
    feats = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=1)
    idx = torch.tensor([3, 17, 0, 8, 11])
    keys = bank.bank.double()
    tup = miner(feats, idx, ref_emb=keys, ref_labels=torch.arange(n))
    pml = NTXentLoss(temperature=tau)(feats, idx, tup, ref_emb=keys, ref_labels=torch.arange(n))
    ours = NeighbourhoodLoss(tau)(feats, idx, keys)
    assert pml.item() == pytest.approx(ours.item(), rel=1e-6)  # PML re-normalises with an eps


def test_inside_cross_batch_memory_queue_copies_are_positives():
    torch.manual_seed(0)
    miner = ANDMiner(round_state=STATE, negatives="all")
    memory = CrossBatchMemory(ContrastiveLoss(), embedding_size=4, memory_size=16, miner=miner)
    first, second = torch.tensor([1, 3, 6]), torch.tensor([1, 4, 2])
    memory(F.normalize(torch.randn(3, 4), dim=1), first)
    feats = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    loss = memory(feats, second)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    # The miner alone on the same queue: query 0 (sample 1, an anchor) matches both queue copies of 1.
    a1, p, _, _ = miner(feats.detach(), second, memory.embedding_memory[:6], memory.label_memory[:6])
    assert {r for q, r in pairs(a1, p) if q == 0} == {0, 3, 4}  # rows of 1 (twice) and neighbour 4


def test_bad_construction_and_inputs():
    with pytest.raises(ValueError, match="at most one of curriculum= or round_state="):
        ANDMiner(EntropyCurriculum(), round_state=STATE)
    with pytest.raises(ValueError, match=r"negatives must be one of \['sampled', 'hardest', 'all', 'none'\], got 'hard'"):
        ANDMiner(negatives="hard")
    with pytest.raises(ValueError, match="num_negatives must be an integer >= 1, got 0"):
        ANDMiner(num_negatives=0)
    miner = ANDMiner(round_state=STATE)
    emb = torch.randn(2, 4)
    idx = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 8\), got 9"):
        miner(emb, torch.tensor([0, 9]), torch.randn(8, 4), torch.arange(8))
    with pytest.raises(ValueError, match=r"ref_emb must have d = 4 columns like embeddings, got shape \(8, 5\)"):
        miner(emb, idx, torch.randn(8, 5), torch.arange(8))
    with pytest.raises(ValueError, match=r"ref_emb must have shape \(rows, d\), got \(8, 4, 1\)"):
        miner(emb, idx, torch.randn(8, 4, 1), torch.arange(8))
    with pytest.raises(ValueError, match="ref_emb must have a floating-point dtype, got torch.int64"):
        miner(emb, idx, torch.ones(8, 4, dtype=torch.long), torch.arange(8))
    with pytest.raises(ValueError, match=r"^ref_labels must have one entry per row of ref_emb \(8 rows\), got 7$"):
        miner(emb, idx, torch.randn(8, 4), torch.arange(7))
    with pytest.raises(ValueError, match="ref_labels: required with ref_emb"):
        miner(emb, idx, torch.randn(8, 4))
    with pytest.raises(ValueError, match="ref_labels must have an integer dtype, got torch.float32"):
        miner(emb, idx, torch.randn(8, 4), torch.arange(8).float())
    with pytest.raises(ValueError, match=r"embeddings must have shape \(rows, d\), got \(2,\)"):
        miner(torch.randn(2), idx)


def test_row_count_errors_name_both_tensors():
    miner = ANDMiner(round_state=STATE)
    with pytest.raises(ValueError, match=r"^labels must have one entry per row of embeddings \(2 rows\), got 3$"):
        miner(torch.randn(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"^ref_labels must have one entry per row of ref_emb \(5 rows\), got 8$"):
        miner(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(5, 4), torch.arange(8))
