"""ANDMiner inside unmodified pytorch-metric-learning losses, checked by hand."""

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import ContrastiveLoss, NTXentLoss

from and_plugin import ANDMiner, EntropyCurriculum, MemoryBank, NeighbourhoodLoss, RoundState


def state_with(anchors, neighbours, n):
    mask = torch.zeros(n, dtype=torch.bool)
    mask[anchors] = True
    return RoundState(1, mask, torch.as_tensor(neighbours), torch.zeros(n))


def test_pairs_by_hand():
    # N = 6, k = 2. Anchors: 1 (neighbours 4, 5) and 3 (neighbours 0, 1). Batch = dataset indices [3, 2, 1].
    neighbours = [[1, 2], [4, 5], [0, 3], [0, 1], [5, 0], [4, 3]]
    miner = ANDMiner(round_state=state_with([1, 3], neighbours, 6))
    embeddings = F.normalize(torch.randn(3, 4), dim=1)
    bank = F.normalize(torch.randn(6, 4), dim=1)
    a1, p, a2, n = miner(embeddings, torch.tensor([3, 2, 1]), ref_emb=bank, ref_labels=torch.arange(6))
    positives = sorted(zip(a1.tolist(), p.tolist()))
    assert positives == [(0, 0), (0, 1), (0, 3), (1, 2), (2, 1), (2, 4), (2, 5)]
    negatives = set(zip(a2.tolist(), n.tolist()))
    assert len(negatives) == 3 * 6 - 7
    assert negatives.isdisjoint(positives)
    assert (1, 4) in negatives  # query 2 (non-anchor) does not get 4's neighbourhood


def test_ref_labels_need_not_be_arange():
    """Reference rows are matched by dataset index, e.g. a reversed or partial reference set."""
    miner = ANDMiner(round_state=state_with([0], [[2], [0], [1]], 3))
    emb = F.normalize(torch.randn(1, 4), dim=1)
    a1, p, _, _ = miner(emb, torch.tensor([0]), ref_emb=F.normalize(torch.randn(2, 4), dim=1), ref_labels=torch.tensor([2, 0]))
    assert sorted(p.tolist()) == [0, 1]  # row 0 holds sample 2 (the neighbour), row 1 holds sample 0 (itself)


def test_ntxent_with_miner_equals_instance_loss_when_no_anchor():
    """With no anchors, NTXent over the miner's pairs is exactly -log p_ii of Eq 2."""
    torch.manual_seed(0)
    n, tau = 20, 0.1
    bank = MemoryBank(n, 8, seed=1)
    state = state_with([], [[(i + 1) % n] for i in range(n)], n)
    miner = ANDMiner(round_state=state)
    feats = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=1)
    idx = torch.tensor([3, 17, 0, 8, 11])
    keys = bank.bank.double()
    pairs = miner(feats, idx, ref_emb=keys, ref_labels=torch.arange(n))
    pml = NTXentLoss(temperature=tau)(feats, idx, pairs, ref_emb=keys, ref_labels=torch.arange(n))
    ours = NeighbourhoodLoss(tau)(feats, idx, keys)
    assert pml.item() == pytest.approx(ours.item(), rel=1e-6)  # PML re-normalises with an eps


def test_miner_follows_the_curriculum_and_trains_with_contrastive_loss():
    torch.manual_seed(0)
    bank = MemoryBank(30, 8)
    curriculum = EntropyCurriculum(rounds=1, selection="one_off")
    miner = ANDMiner(curriculum, negatives="none")
    with pytest.raises(ValueError, match="no neighbourhood round has been discovered yet"):
        miner(torch.randn(2, 8), torch.tensor([0, 1]), ref_emb=bank.bank, ref_labels=torch.arange(30))
    curriculum.discover(bank, 1)
    feats = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    idx = torch.tensor([0, 1, 2, 3])
    a1, p, a2, n = miner(feats, idx, ref_emb=bank.bank, ref_labels=torch.arange(30))
    assert a2.numel() == 0
    expected = sorted([(q, int(i)) for q, i in enumerate(idx)] + [(q, int(curriculum.state.neighbours[i, 0])) for q, i in enumerate(idx)])
    assert sorted(zip(a1.tolist(), p.tolist())) == expected
    loss = ContrastiveLoss()(feats, idx, (a1, p, a2, n), ref_emb=bank.bank, ref_labels=torch.arange(30))
    loss.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


def test_bad_construction_and_labels():
    with pytest.raises(ValueError, match="exactly one of curriculum= or round_state="):
        ANDMiner()
    with pytest.raises(ValueError, match=r"negatives must be one of \['all', 'none'\], got 'hard'"):
        ANDMiner(round_state=state_with([0], [[1], [0]], 2), negatives="hard")
    miner = ANDMiner(round_state=state_with([0], [[1], [0]], 2))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got 7"):
        miner(torch.randn(1, 4), torch.tensor([7]), ref_emb=torch.randn(2, 4), ref_labels=torch.arange(2))
