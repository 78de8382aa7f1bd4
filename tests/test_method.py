"""ANDMethod: Eq 7 and Eq 8 for one or several views, rounds, state, and the Trainer around it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_backbone, tiny_dataset
from lightly.transforms.multi_view_transform import MultiViewTransform
from torchvision.transforms import v2 as T

from and_plugin import Trainer, load_config
from and_plugin.config import MethodConfig
from and_plugin.data.base import IndexedDataset
from and_plugin.loss import NeighbourhoodLoss
from and_plugin.method import ANDMethod

N, D, TAU, ETA = 40, 8, 0.1, 0.5


def method(**kwargs) -> ANDMethod:
    return ANDMethod(N, D, MethodConfig(rounds=2, temperature=TAU, memory_momentum=ETA), **kwargs)


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def eq7(x, bank, positives):
    """−log Σ_{j∈P(i)} p_ij, mean over the batch, in float64 (Eq 7)."""
    logits = x @ bank.T / TAU
    p = torch.softmax(logits, dim=1)
    return torch.stack([-torch.log(p[i, positives[i]].sum()) for i in range(len(x))]).mean()


def test_single_view_is_the_plain_loss_and_update():
    m = method()
    m.start_round(0)
    x = unit(6, D).float()
    indices = torch.tensor([1, 4, 9, 16, 25, 36])
    expected = NeighbourhoodLoss(TAU)(x, indices, m.bank)
    assert torch.equal(m.loss(x, indices), expected)
    assert torch.equal(m.loss([x], indices), expected)  # a one-view list is the same computation
    other = method()
    m.update_bank(x, indices)
    other.bank.update(indices, x)
    assert torch.equal(m.bank.bank, other.bank.bank)


def test_every_view_takes_eq7_against_the_bank():
    m = method()
    m.start_round(0)
    views = [unit(5, D, seed=s) for s in (1, 2, 3)]
    indices = torch.tensor([0, 7, 8, 20, 39])
    bank = m.bank.bank.double()
    expected = torch.stack([eq7(v, bank, indices.view(-1, 1)) for v in views]).mean()
    assert float(m.loss(views, indices)) == pytest.approx(float(expected), abs=1e-5)
    # in a neighbourhood round, anchors' positives include their neighbours (on the unwritten bank)
    with pytest.warns(UserWarning, match="40 of 40 rows were never written"):
        state = m.start_round(1)
    positives, mask = state.positives(indices)
    sets = [positives[i][mask[i]] for i in range(len(indices))]
    expected = torch.stack([eq7(v, bank, sets) for v in views]).mean()
    assert float(m.loss(views, indices)) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("rule", ["mean", "first"])
def test_the_bank_gets_one_eq8_write_per_sample(rule):
    m = method(bank_update=rule)
    views = [unit(4, D, seed=s) for s in (4, 5)]
    indices = torch.tensor([3, 5, 11, 30])
    old = m.bank.bank.double().clone()
    m.update_bank([v.float() for v in views], indices)
    written = F.normalize(torch.stack(views).mean(0), dim=1) if rule == "mean" else views[0]
    expected = F.normalize((1 - ETA) * old[indices] + ETA * written, dim=1)
    assert torch.allclose(m.bank.bank[indices].double(), expected, atol=1e-6)
    untouched = torch.ones(N, dtype=torch.bool)
    untouched[indices] = False
    assert torch.equal(m.bank.bank[untouched].double(), old[untouched])


def test_rounds_state_and_random_fill():
    m = method()
    with pytest.raises(ValueError, match="bank_features: required"):
        m.start_round(1)
    filled = unit(N, D, seed=7).float()
    state = m.start_round(1, lambda: filled)
    assert torch.allclose(m.bank.bank, filled, atol=1e-6)
    assert m.round == 1 and state.num_anchors == N // 2 and m.round_state is state
    x, indices = unit(3, D).float(), torch.tensor([2, 4, 6])
    restored = method()
    restored.load_state_dict(m.state_dict())
    assert restored.round == 1 and restored.bank_initialised
    assert torch.equal(restored.bank.bank, m.bank.bank)
    assert torch.equal(restored.loss(x, indices), m.loss(x, indices))
    m.start_round(0)
    assert m.round_state is None


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="bank_update"):
        method(bank_update="last")
    with pytest.raises(ValueError, match="method.neighbours: got 40, expected < the number of training images N = 40"):
        ANDMethod(N, D, MethodConfig(neighbours=40))
    m = method()
    with pytest.raises(ValueError, match="every view needs the same shape"):
        m.loss([unit(2, D).float(), unit(3, D).float()], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-empty list"):
        m.loss([], torch.tensor([0, 1]))


def trainer_config(tmp_path, *extra):
    return load_config(None, [
        f"run.output_dir={tmp_path}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "run.deterministic=true", "optim.epochs_per_round=1", "method.rounds=2", "data.batch_size=32",
        "model.embedding_dim=16", *extra,
    ])


def with_views(base, transforms):
    return IndexedDataset(base, base.targets, base.classes, transform=MultiViewTransform(transforms))


def test_trainer_takes_lightly_multi_view_batches(tmp_path):
    base = tiny_dataset()
    plain = Trainer(trainer_config(tmp_path / "plain"), tiny_backbone(), base)
    plain.fit()
    # one view through lightly's MultiViewTransform: the same run, bit for bit
    one = Trainer(trainer_config(tmp_path / "one"), tiny_backbone(), with_views(base, [T.Identity()]))
    one.fit()
    assert torch.equal(one.bank.bank, plain.bank.bank)
    assert [h["loss"] for h in one.history] == [h["loss"] for h in plain.history]
    # two augmented views train, write unit rows and reach the last round
    two = Trainer(trainer_config(tmp_path / "two"), tiny_backbone(),
                  with_views(base, [T.RandomResizedCrop(8, scale=(0.5, 1.0)), T.RandomHorizontalFlip(1.0)]))
    result = two.fit()
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    assert torch.allclose(two.bank.bank.norm(dim=1), torch.ones(len(base)), atol=1e-5)
    assert not torch.equal(two.bank.bank, plain.bank.bank)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in two.history)


def test_random_round0_fills_the_bank_from_multi_view_items(tmp_path):
    """round0=random with only a multi-view training set: the untrained fill combines the views."""
    base = tiny_dataset()
    views = with_views(base, [T.Identity(), T.RandomHorizontalFlip(1.0)])
    trainer = Trainer(trainer_config(tmp_path / "random", "method.round0=random"), tiny_backbone(), views)
    filled = trainer._features_of(views)
    assert filled.shape == (len(base), 16)
    assert torch.allclose(filled.norm(dim=1), torch.ones(len(base)), atol=1e-5)
    result = trainer.fit()
    assert [r["round"] for r in result.rounds] == [1, 2]


def test_discovery_reports_rows_never_written_and_fills_them_when_it_can():
    m = method()
    m.start_round(0)
    m.update_bank(unit(30, D).float(), torch.arange(30))  # rows 30..39 never written
    assert m.rows_written == 30
    restored = method()
    restored.load_state_dict(m.state_dict())
    assert restored.rows_written == 30
    with pytest.warns(UserWarning, match=r"^memory bank: 10 of 40 rows were never written before round 1's "
                                         r"neighbourhood discovery .*they enter it as random vectors"):
        m.start_round(1)
    features = unit(N, D, seed=3).float()
    with pytest.warns(UserWarning, match=r"10 of 40 rows .*filled with the current network's features"):
        restored.start_round(1, lambda: features)
    assert torch.allclose(restored.bank.bank[30:], features[30:], atol=1e-6)
    assert torch.equal(restored.bank.bank[:30], m.bank.bank[:30]) and restored.rows_written == N
