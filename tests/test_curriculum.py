"""Entropy (Eq 5), selection (Eq 6), neighbours (Eq 1) and consistency, checked by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from and_plugin import (
    EntropyCurriculum,
    LabelFilteredCurriculum,
    MemoryBank,
    RoundState,
    entropy_and_neighbours,
    neighbourhood_consistency,
    select_anchors,
)
from and_plugin.curriculum import reference_entropy_and_neighbours


def entropy_by_hand(bank, tau):
    out = []
    for i in range(bank.shape[0]):
        weights = [math.exp(float(bank[i] @ bank[j]) / tau) for j in range(bank.shape[0])]
        total = sum(weights)
        out.append(-sum((w / total) * math.log(w / total) for w in weights))
    return out


def test_entropy_matches_eq5_and_is_chunk_independent():
    bank = F.normalize(torch.randn(23, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=1)
    expected = entropy_by_hand(bank, 0.1)
    for budget in (None, 2 * 4 * 23, 5 * 2 * 4 * 23, 1 << 30):  # 1 row, 5 rows, all rows per block
        entropy, _ = entropy_and_neighbours(bank, 0.1, 1, max_chunk_bytes=budget)
        assert entropy.tolist() == pytest.approx(expected, rel=1e-5)


def test_neighbours_on_a_line_exclude_self():
    # Unit vectors at angles 0, 10, 25, 90, 95 degrees: nearest of each by cosine is known.
    angles = torch.tensor([0.0, 10.0, 25.0, 90.0, 95.0]) * math.pi / 180
    bank = torch.stack([angles.cos(), angles.sin()], dim=1)
    _, nearest = entropy_and_neighbours(bank, 0.1, neighbours=2, max_chunk_bytes=16)
    assert nearest[:, 0].tolist() == [1, 0, 1, 4, 3]
    assert nearest[:, 1].tolist() == [2, 2, 0, 2, 2]


def test_two_tight_pairs_have_lowest_entropy():
    """Entropy ranks samples; select_anchors keeps the floor(S*N) lowest, ties by index."""
    entropy = torch.tensor([3.0, 1.0, 2.0, 1.0, 5.0, 0.5, 4.0, 9.0])
    assert select_anchors(entropy, 0.25).nonzero().flatten().tolist() == [1, 5]
    assert select_anchors(entropy, 0.5).nonzero().flatten().tolist() == [1, 2, 3, 5]
    assert select_anchors(entropy, 1.0).all()
    assert not select_anchors(entropy, 0.0).any()


@pytest.mark.parametrize("n, rounds, expected", [(20, 4, [5, 10, 15, 20]), (10, 3, [3, 6, 10]), (7, 1, [7])])
def test_curriculum_fraction_is_r_over_R(n, rounds, expected):
    bank = MemoryBank(n, 4, seed=0)
    curriculum = EntropyCurriculum(rounds=rounds)
    assert [curriculum.discover(bank, r).num_anchors for r in range(1, rounds + 1)] == expected


def test_selection_recomputed_each_round_from_current_bank():
    bank = MemoryBank(40, 4, seed=0)
    curriculum = EntropyCurriculum(rounds=4)
    first = curriculum.discover(bank, 2)
    bank.bank.copy_(F.normalize(torch.randn(40, 4), dim=1))
    second = curriculum.discover(bank, 2)
    expected = select_anchors(entropy_and_neighbours(bank.bank, 0.1)[0], 0.5)
    assert torch.equal(second.anchor_mask, expected)
    assert not torch.equal(first.anchor_mask, second.anchor_mask)


def test_one_off_selects_everything_at_once():
    curriculum = EntropyCurriculum(rounds=1, selection="one_off")
    assert curriculum.discover(MemoryBank(12, 4), 1).num_anchors == 12


def test_none_selects_no_anchor_in_any_round():
    curriculum = EntropyCurriculum(rounds=3, selection="none")
    assert [curriculum.discover(MemoryBank(12, 4), r).num_anchors for r in (1, 2, 3)] == [0, 0, 0]


def test_label_filtered_keeps_only_consistent_entropy_anchors():
    bank = MemoryBank(60, 4, seed=5)
    labels = torch.arange(60) % 3
    plain = EntropyCurriculum(rounds=2, neighbours=2).discover(bank, 2, labels=labels)
    filtered = LabelFilteredCurriculum(rounds=2, neighbours=2).discover(bank, 2, labels=labels)
    assert torch.equal(filtered.neighbours, plain.neighbours) and torch.equal(filtered.entropy, plain.entropy)
    same = (labels[plain.neighbours] == labels.view(-1, 1)).all(dim=1)
    assert torch.equal(filtered.anchor_mask, plain.anchor_mask & same)  # by hand: entropy anchors, then the filter
    assert 0 < filtered.num_anchors < plain.num_anchors
    assert filtered.consistency["ratio"] == 1.0 and filtered.consistency["inconsistent"] == 0
    with pytest.raises(ValueError, match="labels: the label_filtered curriculum needs the training labels"):
        LabelFilteredCurriculum(rounds=2).discover(bank, 1)


def test_consistency_counts():
    mask = torch.tensor([True, True, False, True])
    neighbours = torch.tensor([[1, 2], [0, 3], [0, 1], [2, 0]])
    labels = torch.tensor([0, 0, 0, 1])
    # anchor 0: {1,2} both 0 -> consistent; anchor 1: {0,3} -> 3 is class 1 -> no; anchor 3: {2,0} class 0 != 1 -> no
    assert neighbourhood_consistency(mask, neighbours, labels) == {"consistent": 1, "inconsistent": 2, "ratio": 1 / 3}


def test_discover_reports_consistency_with_labels():
    bank = MemoryBank(16, 4, seed=1)
    state = EntropyCurriculum(rounds=2).discover(bank, 2, labels=torch.arange(16) % 2)
    assert state.consistency["consistent"] + state.consistency["inconsistent"] == 16


def test_round_state_round_trip():
    curriculum = EntropyCurriculum(rounds=2, neighbours=3)
    state = curriculum.discover(MemoryBank(10, 4), 1)
    other = EntropyCurriculum(rounds=2, neighbours=3)
    other.load_state_dict(curriculum.state_dict())
    assert torch.equal(other.state.anchor_mask, state.anchor_mask)
    assert torch.equal(other.state.neighbours, state.neighbours)


def test_positives_table():
    curriculum = EntropyCurriculum(rounds=1, selection="one_off")
    state = curriculum.discover(MemoryBank(6, 4, seed=2), 1)
    positives, mask = state.positives(torch.tensor([4, 0]))
    assert positives[:, 0].tolist() == [4, 0]
    assert positives[:, 1].tolist() == [int(state.neighbours[4, 0]), int(state.neighbours[0, 0])]
    assert mask.all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rounds": 0}, "rounds must be an integer >= 1, got 0"),
        ({"neighbours": 0}, "neighbours must be an integer >= 1, got 0"),
        ({"temperature": 0}, "temperature must be > 0, got 0"),
        ({"selection": "greedy"}, r"selection must be one of \['curriculum', 'one_off', 'none'\], got 'greedy'"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EntropyCurriculum(**kwargs)


def test_neighbours_must_be_below_n_and_round_in_range():
    with pytest.raises(ValueError, match="neighbours must be < the number of samples N = 5, got 5"):
        EntropyCurriculum(rounds=1, neighbours=5).discover(MemoryBank(5, 3), 1)
    with pytest.raises(ValueError, match=r"round must be an integer in \[0, 2\], got 3"):
        EntropyCurriculum(rounds=2).discover(MemoryBank(5, 3), 3)
    with pytest.raises(ValueError, match="round must be >= 1 for discovery"):
        EntropyCurriculum(rounds=2).discover(MemoryBank(5, 3), 0)


def test_round_state_is_checked_once_when_built():
    mask = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match=r"neighbours must lie in \[0, 3\), got 3"):
        RoundState(1, mask, torch.tensor([[1], [2], [3]]), torch.zeros(3))
    with pytest.raises(ValueError, match=r"neighbours must have shape \(3, \*\), got \(2, 1\)"):
        RoundState(1, mask, torch.tensor([[1], [2]]), torch.zeros(3))
    with pytest.raises(ValueError, match="anchor_mask must have dtype torch.bool, got torch.int64"):
        RoundState(1, torch.tensor([1, 0, 1]), torch.tensor([[1], [2], [0]]), torch.zeros(3))
    with pytest.raises(ValueError, match=r"entropy must have shape \(3\), got \(4,\)"):
        RoundState(1, mask, torch.tensor([[1], [2], [0]]), torch.zeros(4))
    with pytest.raises(ValueError, match="neighbours must have an integer dtype"):
        RoundState.from_state_dict({"round": 1, "anchor_mask": mask, "neighbours": torch.zeros(3, 1), "entropy": torch.zeros(3)})


def test_positives_refuse_bad_indices_by_name():
    state = RoundState(1, torch.tensor([True, False, True]), torch.tensor([[1], [2], [0]]), torch.zeros(3))
    for bad, value in ((torch.tensor([0, 3]), 3), (torch.tensor([-1]), -1)):
        with pytest.raises(ValueError, match=rf"indices must lie in \[0, 3\), got {value}"):
            state.positives(bad)
    with pytest.raises(ValueError, match="indices must have an integer dtype"):
        state.positives(torch.tensor([0.0]))
    positives, mask = state.positives(torch.tensor([2, 1, 2]))
    assert positives.tolist() == [[2, 0], [1, 2], [2, 0]] and mask.tolist() == [[True, True], [True, False], [True, True]]


def test_discover_equals_the_reference_of_eq1_and_eq5():
    """The curriculum's refresh (the tiled kernel) against the plain formula, then Eq 6 on top."""
    bank = F.normalize(torch.randn(130, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64), dim=1)
    state = EntropyCurriculum(rounds=4, neighbours=3, temperature=0.07, max_chunk_bytes=2 * 8 * 32 * 32).discover(bank, 3)
    entropy, nearest = reference_entropy_and_neighbours(bank, 0.07, 3)
    assert torch.allclose(state.entropy, entropy, rtol=1e-11, atol=1e-11)
    assert torch.equal(state.neighbours.sort(dim=1).values, nearest.sort(dim=1).values)
    assert torch.equal(state.anchor_mask, select_anchors(entropy, 0.75))


def test_temperature_is_checked_where_it_enters_only(monkeypatch):
    """The constructor checks τ; discover (every round) does not check it again."""
    import and_plugin.curriculum as curriculum_module

    curriculum = EntropyCurriculum(rounds=1)
    calls = []
    monkeypatch.setattr(curriculum_module, "check_positive", lambda *args: calls.append(args))
    curriculum.discover(MemoryBank(10, 4), 1)
    assert calls == []
    entropy_and_neighbours(torch.eye(4), 0.1)
    assert calls == [("temperature", 0.1)]
