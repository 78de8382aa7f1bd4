"""ANDLoss (Eq 7 as a PML loss), the criteria built by name, and short trainings with PML losses.

Eq 7 is checked by hand in float64: L_i = −log Σ_{j∈P(i)} p_ij with p_ij the softmax of
x_i·x̃_j/τ over the reference rows, written as plain loops over rows.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import DoNothingReducer, SumReducer
from torch.utils.data import DataLoader

from and_plugin import (
    LOSSES,
    MINERS,
    ANDLoss,
    ANDMiner,
    EntropyCurriculum,
    MemoryBank,
    NeighbourhoodLoss,
    PMLCriterion,
    RoundState,
    Trainer,
    build_criterion,
    load_config,
)
from and_plugin.config import ConfigError
from and_plugin.pml_loss import ANDCrossBatchMemory
from conftest import tiny_backbone, tiny_dataset

TAU = 0.1
NEIGHBOURS = [[1, 2], [4, 5], [0, 3], [0, 1], [5, 0], [4, 3], [7, 1], [6, 2]]


def state_with(anchors, neighbours=NEIGHBOURS, n=8):
    mask = torch.zeros(n, dtype=torch.bool)
    mask[anchors] = True
    return RoundState(1, mask, torch.as_tensor(neighbours), torch.zeros(n))


STATE = state_with([1, 3])


def eq7_by_hand(x, labels, keys, ref_labels, state, self_reference=False):
    """{query: −log Σ_{j∈P(i)} p_ij}, softmax over the reference rows (never the query itself)."""
    out = {}
    for q, i in enumerate(labels.tolist()):
        members = {i} | (set(state.neighbours[i].tolist()) if state is not None and state.anchor_mask[i] else set())
        rows = [r for r in range(len(ref_labels)) if not (self_reference and r == q)]
        logits = {r: float(x[q] @ keys[r]) / TAU for r in rows}
        top = max(logits.values())
        total = sum(math.exp(v - top) for v in logits.values())
        positive = sum(math.exp(logits[r] - top) for r in rows if int(ref_labels[r]) in members)
        if positive > 0:
            out[q] = -math.log(positive / total)
    return out


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("chunk_size", [None, 3], ids=["fused", "streamed"])
@pytest.mark.parametrize("state", [None, STATE], ids=["round0", "round1"])
def test_owned_bank_is_eq7_and_equals_neighbourhood_loss(state, chunk_size):
    bank = MemoryBank(8, 5, dtype=torch.float64, seed=3)
    x = unit(4, 5).requires_grad_()
    idx = torch.tensor([3, 2, 1, 6])
    kwargs = dict(round_state=state, memory_bank=bank, update_bank=False, chunk_size=chunk_size)
    per_sample = ANDLoss(TAU, reducer=DoNothingReducer(), **kwargs)(x, idx)["loss"]["losses"]
    want = eq7_by_hand(x.detach(), idx, bank.bank, torch.arange(8), state)
    # The fused attention kernel of bank_logsumexp accumulates at lower precision than float64.
    rel = 1e-6 if chunk_size is None else 1e-9
    assert per_sample.tolist() == pytest.approx([want[q] for q in range(4)], rel=rel)
    mean = ANDLoss(TAU, **kwargs)(x, idx)
    (grad,) = torch.autograd.grad(mean, x)
    ours = NeighbourhoodLoss(TAU, chunk_size)(x, idx, bank, state)
    (ours_grad,) = torch.autograd.grad(ours, x)
    # ANDLoss normalises x (CosineSimilarity): the gradient is NeighbourhoodLoss's, projected.
    projected = ours_grad - (ours_grad * x).sum(1, keepdim=True) * x
    assert mean.item() == pytest.approx(ours.item(), rel=rel)
    assert torch.allclose(grad, projected, atol=rel / 10)


@pytest.mark.parametrize("reference", ["bank", "permuted", "partial", "duplicated"])
def test_any_reference_set_is_eq7_over_its_rows(reference):
    ref_labels = {
        "bank": torch.arange(8),
        "permuted": torch.tensor([5, 2, 7, 0, 3, 6, 1, 4]),
        "partial": torch.tensor([4, 0, 6, 2]),
        "duplicated": torch.tensor([3, 0, 1, 3, 4, 5, 1, 0, 3, 2, 6]),
    }[reference]
    keys = unit(len(ref_labels), 5, seed=1)
    x = unit(4, 5)
    idx = torch.tensor([3, 2, 1, 6])
    per_sample = ANDLoss(TAU, round_state=STATE, reducer=DoNothingReducer())(x, idx, ref_emb=keys, ref_labels=ref_labels)
    info = per_sample["loss"]
    want = eq7_by_hand(x, idx, keys, ref_labels, STATE)
    assert info["indices"].tolist() == sorted(want)  # queries without a positive row are left out
    assert info["losses"].tolist() == pytest.approx([want[q] for q in sorted(want)], rel=1e-9)


def test_batch_as_reference_two_views_are_positives_and_self_is_excluded():
    x = unit(6, 5).requires_grad_()
    idx = torch.tensor([0, 2, 7, 0, 2, 7])  # two views each
    info = ANDLoss(TAU, reducer=DoNothingReducer())(x, idx)["loss"]
    want = eq7_by_hand(x.detach(), idx, x.detach(), idx, None, self_reference=True)
    assert sorted(want) == list(range(6))
    assert info["losses"].tolist() == pytest.approx([want[q] for q in range(6)], rel=1e-9)
    ANDLoss(TAU)(x, idx).backward()
    assert torch.isfinite(x.grad).all()
    single = ANDLoss(TAU)(unit(3, 5), torch.tensor([0, 1, 2]))  # no second view: nothing to learn
    assert single.item() == 0.0


def test_reducers_and_indices_tuple():
    keys = unit(8, 5, seed=2)
    x = unit(4, 5)
    idx = torch.tensor([3, 2, 1, 6])
    args = dict(ref_emb=keys, ref_labels=torch.arange(8))
    per_sample = ANDLoss(TAU, round_state=STATE, reducer=DoNothingReducer())(x, idx, **args)["loss"]["losses"]
    assert ANDLoss(TAU, round_state=STATE, reducer=SumReducer())(x, idx, **args).item() == pytest.approx(
        per_sample.sum().item(), rel=1e-12)
    assert ANDLoss(TAU, round_state=STATE)(x, idx, **args).item() == pytest.approx(per_sample.mean().item(), rel=1e-12)
    # With a miner's tuple, P(i) is the positive pairs and the softmax runs over the mined pairs only.
    tup = ANDMiner(round_state=STATE, negatives="sampled", num_negatives=3)(x, idx, **args)
    a1, p, a2, n = tup
    got = ANDLoss(TAU, reducer=DoNothingReducer())(x, idx, tup, **args)["loss"]
    for q, value in zip(got["indices"].tolist(), got["losses"].tolist()):
        pos = [int(r) for a, r in zip(a1, p) if a == q]
        rows = pos + [int(r) for a, r in zip(a2, n) if a == q]
        logits = torch.tensor([float(x[q] @ keys[r]) / TAU for r in rows], dtype=torch.float64)
        assert value == pytest.approx(float(logits.logsumexp(0) - logits[: len(pos)].logsumexp(0)), rel=1e-9)


def test_owned_bank_is_written_by_eq8_during_backward():
    torch.manual_seed(0)
    bank = MemoryBank(20, 6, memory_momentum=0.5, seed=5)
    twin = MemoryBank(20, 6, memory_momentum=0.5, seed=5)
    loss_fn = ANDLoss(TAU, EntropyCurriculum(rounds=1), memory_bank=bank)
    x = F.normalize(torch.randn(4, 6), dim=1).requires_grad_()
    idx = torch.tensor([1, 7, 7, 12])  # a repeated index is averaged, as MemoryBank.update does
    loss = loss_fn(x, idx)
    assert torch.equal(bank.bank, twin.bank)  # nothing written in forward
    loss.backward()
    twin.update(idx, F.normalize(x.detach(), dim=1))  # the bank receives normalised embeddings
    assert torch.equal(bank.bank, twin.bank)
    with torch.no_grad():
        loss_fn(x, idx)  # evaluation: no write
    ANDLoss(TAU, memory_bank=bank, update_bank=False)(x, idx).backward()
    ANDLoss(TAU, memory_bank=bank)(x, idx, ref_emb=twin.bank.clone(), ref_labels=torch.arange(20)).backward()
    assert torch.equal(bank.bank, twin.bank)
    assert "memory_bank.bank" in loss_fn.state_dict()
    state = loss_fn.discover(round=1)
    assert loss_fn.current_state() is state and state.num_anchors == 20


def test_inside_cross_batch_memory():
    torch.manual_seed(0)
    miner = ANDMiner(round_state=STATE, negatives="all")
    memory = ANDCrossBatchMemory(ANDLoss(TAU, round_state=STATE), embedding_size=4, memory_size=16, miner=miner)
    memory(F.normalize(torch.randn(3, 4), dim=1), torch.tensor([1, 3, 6]))
    feats = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    loss = memory(feats, torch.tensor([1, 4, 2]))
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(feats.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_bank(dtype):
    bank = MemoryBank(30, 8, dtype=dtype)
    x = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    idx = torch.tensor([0, 4, 9, 29])
    loss = ANDLoss(TAU, memory_bank=bank)(x, idx)
    reference = NeighbourhoodLoss(TAU)(x.detach(), idx, bank.bank.float())
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    for name in ("ntxent", "contrastive"):
        value = build_criterion(load_config(None, [f"method.loss={name}"]).method)(x, idx, bank, None)
        assert torch.isfinite(value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="labels: ANDLoss needs the batch's dataset indices as labels, got None"):
        ANDLoss(TAU)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        ANDLoss(0)
    with pytest.raises(ValueError, match="memory_bank must be a MemoryBank or None, got Tensor"):
        ANDLoss(TAU, memory_bank=torch.randn(4, 2))
    with pytest.raises(AssertionError, match="ANDLoss requires the distance metric to be CosineSimilarity"):
        ANDLoss(TAU, distance=LpDistance())
    with pytest.raises(ValueError, match=r"ref_emb must have d = 4 columns like embeddings, got shape \(8, 3\)"):
        ANDLoss(TAU)(torch.randn(2, 4), torch.tensor([0, 1]), ref_emb=torch.randn(8, 3), ref_labels=torch.arange(8))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got 4"):
        ANDLoss(TAU, memory_bank=MemoryBank(4, 2))(torch.randn(2, 2), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="discover: needs both curriculum= and memory_bank="):
        ANDLoss(TAU).discover(1)


# ------------------------------------------------------------------------- criteria by name


def test_every_name_builds_the_right_criterion():
    curriculum = EntropyCurriculum(rounds=1)
    assert isinstance(build_criterion(load_config(None).method, curriculum), NeighbourhoodLoss)
    for name, cls in [("contrastive", pml_losses.ContrastiveLoss), ("triplet_margin", pml_losses.TripletMarginLoss),
                      ("multi_similarity", pml_losses.MultiSimilarityLoss), ("ntxent", pml_losses.NTXentLoss),
                      ("supcon", pml_losses.SupConLoss), ("pml:CircleLoss", pml_losses.CircleLoss),
                      ("and_pml", ANDLoss)]:
        criterion = build_criterion(load_config(None, [f"method.loss={name}", "method.temperature=0.2"]).method, curriculum)
        assert isinstance(criterion, PMLCriterion) and type(criterion.loss) is cls, name
        if hasattr(criterion.loss, "temperature"):
            assert criterion.loss.temperature == 0.2
        assert (criterion.miner is None) == (name == "and_pml")
        if criterion.miner is not None:
            assert criterion.miner.curriculum is curriculum
    method = load_config(None, ["method.loss=ntxent", "method.miner=and",
                                "method.miner_kwargs={negatives: hardest, num_negatives: 7}",
                                "method.loss_kwargs={temperature: 0.5}"]).method
    criterion = build_criterion(method)
    assert (criterion.miner.negatives, criterion.miner.num_negatives, criterion.loss.temperature) == ("hardest", 7, 0.5)
    assert "and" in MINERS and {"neighbourhood", "ntxent", "and_pml"} <= set(LOSSES)


def test_wrong_names_list_the_known_ones():
    with pytest.raises(ConfigError, match=r"method.loss: unknown loss 'ntx'; known losses: and, and_pml, contrastive"):
        load_config(None, ["method.loss=ntx"])
    with pytest.raises(ConfigError, match=r"method.loss: unknown loss 'pml:Nope'.*known: AngularLoss"):
        load_config(None, ["method.loss=pml:Nope"])
    with pytest.raises(ConfigError, match=r"method.miner must be null or one of \['and'\], got 'hard'"):
        load_config(None, ["method.miner=hard"])
    with pytest.raises(ConfigError, match=r"method.curriculum must be one of \['entropy', 'label_filtered'\], got 'random'"):
        load_config(None, ["method.curriculum=random"])
    with pytest.raises(ValueError, match="method.miner: the 'neighbourhood' loss takes no miner"):
        build_criterion(load_config(None, ["method.miner=and"]).method)


def test_pml_criterion_in_round_zero_is_the_instance_loss():
    """NTXent over all negatives with P(i) = {i} is −log p_ii (Eq 2), as NeighbourhoodLoss."""
    bank = MemoryBank(40, 8, dtype=torch.float64, seed=1)
    method = load_config(None, ["method.loss=ntxent", "method.miner_kwargs={negatives: all}"]).method
    criterion = build_criterion(method, EntropyCurriculum(rounds=1))
    x = unit(5, 8)
    idx = torch.tensor([3, 17, 0, 8, 39])
    assert criterion(x, idx, bank, None).item() == pytest.approx(NeighbourhoodLoss(0.1)(x, idx, bank).item(), rel=1e-6)
    state = EntropyCurriculum(rounds=1, selection="one_off").discover(bank, 1)
    with_state = criterion(x, idx, bank, state)
    assert criterion.miner.current_state() is state and with_state.item() != pytest.approx(
        NeighbourhoodLoss(0.1)(x, idx, bank).item())


@pytest.mark.parametrize("loss", ["ntxent", "and_pml"])
def test_trainer_runs_a_pml_loss_chosen_by_name(tmp_path, loss):
    cfg = load_config(None, [
        f"run.output_dir={tmp_path}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "optim.epochs_per_round=1", "method.rounds=1", "data.batch_size=32", "model.embedding_dim=16",
        f"method.loss={loss}",
    ])
    data = tiny_dataset()
    trainer = Trainer(cfg, tiny_backbone(), data, data, data)
    assert isinstance(trainer.criterion, PMLCriterion)
    result = trainer.fit()
    assert [r["round"] for r in result.rounds] == [0, 1]
    assert all(math.isfinite(r["loss"]) for r in trainer.history)


# ------------------------------------------------------------- training with PML losses


TRAIN_LOSSES = {
    "ContrastiveLoss": lambda: pml_losses.ContrastiveLoss(),
    "TripletMarginLoss": lambda: pml_losses.TripletMarginLoss(margin=0.2),
    "MultiSimilarityLoss": lambda: pml_losses.MultiSimilarityLoss(),
    "NTXentLoss": lambda: pml_losses.NTXentLoss(temperature=0.1),
    "SupConLoss": lambda: pml_losses.SupConLoss(temperature=0.1),
}


@pytest.fixture(scope="module")
def digits():
    from and_plugin.data import build_dataset, build_transform

    train = build_dataset("digits", split="train", subset=300, transform=build_transform("digits", train=True))
    plain = build_dataset("digits", split="train", subset=300, transform=build_transform("digits", train=False))
    test = build_dataset("digits", split="test", transform=build_transform("digits", train=False))
    return train, plain, test


def knn_of(model, plain, test):
    from and_plugin.evaluation import extract_features, knn_accuracy

    train_x, train_y = extract_features(model, DataLoader(plain, batch_size=100))
    test_x, test_y = extract_features(model, DataLoader(test, batch_size=100))
    return knn_accuracy(train_x, train_y, test_x, test_y, num_classes=10, k=50)


@pytest.mark.parametrize("name", list(TRAIN_LOSSES))
def test_short_training_with_an_unmodified_pml_loss_beats_the_untrained_network(name, digits):
    from and_plugin.backbones import build_backbone

    train, plain, test = digits
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_backbone("small_cnn", in_channels=1, width=8, embedding_dim=32)
    untrained = knn_of(model, plain, test)
    loss_fn = TRAIN_LOSSES[name]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9, nesterov=True, weight_decay=5e-4)
    everything = torch.arange(len(train))
    bank = MemoryBank(len(train), 32)
    curriculum = EntropyCurriculum(rounds=1, neighbours=1)
    miner = ANDMiner(curriculum, num_negatives=64)
    loader = DataLoader(train, batch_size=50, shuffle=True, drop_last=True)
    for r in range(2):
        if r > 0:
            curriculum.discover(bank, round=r)
        for _ in range(3):
            for images, _, indices in loader:
                embeddings = model(images)
                pairs = miner(embeddings, indices, bank.bank, everything)
                loss = loss_fn(embeddings, indices, pairs, ref_emb=bank.bank, ref_labels=everything)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bank.update(indices, embeddings)
    trained = knn_of(model, plain, test)
    assert trained > untrained + 0.03, f"{name}: kNN {trained:.3f} after training, {untrained:.3f} untrained"
