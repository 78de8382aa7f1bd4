"""The loss against Eq 2, 3, 7 and its gradients against Eq 9–11, all in float64; the kernels of
Eq 2's normaliser against the reference; the host syncs of one training step."""

import math

import pytest
import torch
import torch.nn.functional as F

import and_plugin.kernels.bank_logsumexp as kernels
from and_plugin import EntropyCurriculum, MemoryBank, NeighbourhoodLoss, RoundState, bank_logsumexp, neighbourhood_loss
from and_plugin.loss import reference_bank_logsumexp


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def p_matrix(queries, keys, tau):
    """p_ij of Eq 2 written out: exp(x_i.x_j/tau) / sum_k exp(x_i.x_k/tau), with explicit sums."""
    out = torch.empty(queries.shape[0], keys.shape[0], dtype=torch.float64)
    for i in range(queries.shape[0]):
        weights = [math.exp(float(queries[i] @ keys[j]) / tau) for j in range(keys.shape[0])]
        total = sum(weights)
        for j, w in enumerate(weights):
            out[i, j] = w / total
    return out


def test_instance_loss_equals_eq2_by_hand():
    bank = unit(6, 3, 0)
    x = unit(2, 3, 1)
    idx = torch.tensor([4, 1])
    p = p_matrix(x, bank, 0.1)
    expected = -(math.log(p[0, 4]) + math.log(p[1, 1])) / 2
    got = NeighbourhoodLoss(0.1)(x, idx, bank)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_a_round_without_anchors_is_the_instance_loss():
    bank = MemoryBank(10, 4, seed=3)
    x, idx = unit(5, 4, 4).float(), torch.tensor([0, 3, 9, 4, 7])
    state = EntropyCurriculum(rounds=2, selection="none").discover(bank, 1)
    loss = NeighbourhoodLoss(0.1)
    assert torch.equal(loss(x, idx, bank, state, reduction="none"), loss(x, idx, bank, None, reduction="none"))


def test_anchor_loss_equals_eq3_and_mixes_per_eq7():
    bank = unit(8, 4, 2)
    x = unit(3, 4, 3)
    idx = torch.tensor([0, 5, 7])
    # sample 0 and 7 are anchors with neighbours {3, 6} and {2, 1}; sample 5 is not.
    anchor_mask = torch.zeros(8, dtype=torch.bool)
    anchor_mask[[0, 7]] = True
    neighbours = torch.zeros(8, 2, dtype=torch.long)
    neighbours[0] = torch.tensor([3, 6])
    neighbours[7] = torch.tensor([2, 1])
    neighbours[5] = torch.tensor([0, 1])  # ignored: 5 is no anchor
    state = RoundState(1, anchor_mask, neighbours, torch.zeros(8))
    p = p_matrix(x, bank, 0.07)
    expected = [
        -math.log(p[0, 0] + p[0, 3] + p[0, 6]),
        -math.log(p[1, 5]),
        -math.log(p[2, 7] + p[2, 2] + p[2, 1]),
    ]
    got = NeighbourhoodLoss(0.07)(x, idx, bank, state, reduction="none")
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    assert NeighbourhoodLoss(0.07)(x, idx, bank, state).item() == pytest.approx(sum(expected) / 3, rel=1e-12)
    assert NeighbourhoodLoss(0.07)(x, idx, bank, state, reduction="sum").item() == pytest.approx(sum(expected), rel=1e-12)


def test_tiny_temperature_stays_finite():
    """log(softmax) underflows at tau = 0.005 (exp(-400)); log-sum-exp must not."""
    bank = unit(50, 8, 4)
    x = -bank[:2]  # maximally far from their own slot: p_ii ~ exp(-2/tau)
    loss = NeighbourhoodLoss(0.005)(x, torch.tensor([0, 1]), bank, reduction="none")
    assert torch.isfinite(loss).all() and (loss > 100).all()


@pytest.mark.parametrize("chunk_size", [None, 3, 7, 1000])
def test_gradient_wrt_query_matches_closed_form_with_bank_keys(chunk_size):
    """With the bank as (constant) keys: dL_i/dx_i = (1/tau)(sum_k p_ik x~_k - sum_{k in N} p~_ik x~_k)."""
    tau = 0.1
    bank = unit(10, 5, 5)
    x = unit(3, 5, 6).requires_grad_()
    idx = torch.tensor([2, 9, 4])
    anchor_mask = torch.tensor([False, False, True, False, False, False, False, False, False, True])
    neighbours = torch.tensor([[1], [2], [8], [0], [5], [4], [7], [6], [3], [0]])
    state = RoundState(1, anchor_mask, neighbours, torch.zeros(10))
    loss = NeighbourhoodLoss(tau, chunk_size=chunk_size)(x, idx, bank, state, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    p = p_matrix(x.detach(), bank, tau)
    sets = {2: [2, 8], 9: [9, 0], 4: [4]}
    for row, i in enumerate(idx.tolist()):
        positives = sets[i]
        z = sum(p[row, j] for j in positives)
        expected = sum(p[row, k] * bank[k] for k in range(10)) - sum((p[row, j] / z) * bank[j] for j in positives)
        assert torch.allclose(grad[row], expected / tau, atol=1e-12)


def test_gradients_match_eq9_to_11_with_live_keys():
    """Eq 9–11 are written for keys that are the features themselves; check every term.

    Eq 9 (instance i):  dL/dx_i = (1/tau)[sum_k p_ik x_k + (p_ii - 2) x_i],  dL/dx_j = (1/tau) p_ij x_i.
    Eq 10/11 (anchor i, N = {i} ∪ N_k(i), p~_ij = p_ij / sum_{k in N} p_ik):
      dL/dx_i = (1/tau)[sum_k p_ik x_k - sum_{k in N} p~_ik x_k + (p_ii - p~_ii) x_i]
      dL/dx_j = (1/tau)(p_ij - p~_ij) x_i  (j in N, j != i);  (1/tau) p_ij x_i otherwise.
    (The printed Eq 10 drops the x_k of the middle sum and writes x_i for x_k in the first.)
    """
    tau, n = 0.2, 7
    base = unit(n, 4, 7)
    for anchor, hood in [(False, [3]), (True, [3, 5, 0])]:
        feats = base.clone().requires_grad_()
        i = 3
        mask = torch.zeros(n, dtype=torch.bool)
        mask[i] = anchor
        neighbours = torch.tensor([[j] for j in range(n)])
        neighbours = torch.zeros(n, 2, dtype=torch.long)
        neighbours[i] = torch.tensor([5, 0])
        state = RoundState(1, mask, neighbours, torch.zeros(n))
        loss = NeighbourhoodLoss(tau)(feats[i : i + 1], torch.tensor([i]), feats, state, reduction="sum")
        (grad,) = torch.autograd.grad(loss, feats)
        x = base
        p = p_matrix(x[i : i + 1], x, tau)[0]
        if not anchor:
            expected_i = (sum(p[k] * x[k] for k in range(n)) + (p[i] - 2) * x[i]) / tau
            expected_j = {j: p[j] * x[i] / tau for j in range(n) if j != i}
        else:
            z = sum(p[k] for k in hood)
            pt = {k: p[k] / z for k in hood}
            expected_i = (sum(p[k] * x[k] for k in range(n)) - sum(pt[k] * x[k] for k in hood) + (p[i] - pt[i]) * x[i]) / tau
            expected_j = {j: ((p[j] - pt[j]) if j in hood else p[j]) * x[i] / tau for j in range(n) if j != i}
        assert torch.allclose(grad[i], expected_i, atol=1e-12)
        for j, value in expected_j.items():
            assert torch.allclose(grad[j], value, atol=1e-12)


def test_streaming_equals_full_and_keeps_bank_without_grad():
    bank = unit(40, 6, 8)
    x = unit(5, 6, 9)
    idx = torch.arange(5)
    full = neighbourhood_loss(x, bank, idx.view(-1, 1), temperature=0.1)
    for chunk in (1, 6, 39, 40, 41):
        assert neighbourhood_loss(x, bank, idx.view(-1, 1), temperature=0.1, chunk_size=chunk).item() == pytest.approx(
            full.item(), rel=1e-12
        )


def test_round_state_from_curriculum_feeds_the_loss():
    bank = MemoryBank(30, 8, seed=1)
    state = EntropyCurriculum(rounds=2, neighbours=2).discover(bank, round=2)
    x = unit(4, 8, 10).float()
    loss = NeighbourhoodLoss(0.1)(x, torch.tensor([0, 1, 2, 3]), bank, state)
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ({"temperature": -1}, "temperature must be > 0, got -1"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NeighbourhoodLoss(**kwargs)


def test_bad_shapes_and_indices_are_named():
    bank = unit(10, 4, 0)
    loss = NeighbourhoodLoss()
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 10\), got 10"):
        loss(unit(2, 4, 1), torch.tensor([1, 10]), bank)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 10\), got -1"):
        loss(unit(2, 4, 1), torch.tensor([-1, 3]), bank)
    with pytest.raises(ValueError, match=r"bank must have shape \(\*, 3\), got \(10, 4\)"):
        loss(unit(2, 3, 1), torch.tensor([1, 2]), bank)
    with pytest.raises(ValueError, match=r"indices must have shape \(2\), got \(3,\)"):
        loss(unit(2, 4, 1), torch.tensor([1, 2, 3]), bank)


def test_fused_kernel_is_checked_once_and_dropped_on_mismatch(monkeypatch):
    """A fused kernel whose output layout is wrong (a future PyTorch) must not change the loss."""
    bank = unit(30, 8, 11).float()
    x = unit(4, 8, 12).float()
    plain = torch.logsumexp(x @ bank.T / 0.1, dim=1)
    real = kernels.fused_attention
    monkeypatch.setattr(kernels, "FUSED_CHECKED", {})
    monkeypatch.setattr(kernels, "fused_attention", lambda f, k, s: tuple(t.flip(0) for t in real(f, k, s)))
    with pytest.warns(UserWarning, match="disagrees with the plain path"):
        got = bank_logsumexp(x, bank, 0.1)
    assert torch.allclose(got, plain, atol=1e-5)
    assert kernels.FUSED_CHECKED[("cpu", torch.float32)] is False
    monkeypatch.setattr(kernels, "fused_attention", real)
    monkeypatch.setattr(kernels, "FUSED_CHECKED", {})
    assert torch.allclose(bank_logsumexp(x, bank, 0.1), plain, atol=1e-5)
    assert kernels.FUSED_CHECKED[("cpu", torch.float32)] is True


def test_a_wrong_fused_gradient_is_caught_too(monkeypatch):
    """The once-per-device check compares the kernel's Σ_k p_ik x̃_k with the reference's gradient."""
    bank, x = unit(30, 8, 13).float(), unit(4, 8, 14).float()
    real = kernels.fused_attention
    monkeypatch.setattr(kernels, "FUSED_CHECKED", {})
    monkeypatch.setattr(kernels, "fused_attention", lambda f, k, s: (real(f, k, s)[0], real(f, k, s)[1] * 0.5))
    with pytest.warns(UserWarning, match="disagrees"):
        assert kernels.fused_bank_logsumexp(x, bank, 0.1, reference_bank_logsumexp) is None


SHAPES = [(1, 1, 4), (5, 37, 8), (16, 300, 32), (3, 1000, 16)]  # (B, N, d)
DTYPES = [(torch.float64, 1e-12), (torch.float32, 2e-5)]


def value_and_gradient(function, x, bank, tau):
    x = x.detach().clone().requires_grad_()
    lse = function(x, bank, tau)
    (gradient,) = torch.autograd.grad((lse * torch.linspace(0.5, 1.5, lse.numel(), dtype=lse.dtype)).sum(), x)
    return lse.detach(), gradient


@pytest.mark.parametrize("dtype, tolerance", DTYPES)
@pytest.mark.parametrize("b, n, d", SHAPES)
@pytest.mark.parametrize("chunk", [1, 7, 64, 5000])
@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_streamed_kernel_equals_the_reference(dtype, tolerance, b, n, d, chunk, tau):
    bank, x = unit(n, d, n).to(dtype), unit(b, d, b + 1).to(dtype)
    expected = value_and_gradient(reference_bank_logsumexp, x, bank, tau)
    got = value_and_gradient(lambda q, m, t: kernels.streamed_bank_logsumexp(q, m, t, chunk), x, bank, tau)
    for g, e in zip(got, expected):
        assert g.dtype == dtype and torch.allclose(g, e, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype, tolerance", DTYPES)
@pytest.mark.parametrize("b, n, d", SHAPES)
@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_fused_kernel_equals_the_reference(monkeypatch, dtype, tolerance, b, n, d, tau):
    monkeypatch.setattr(kernels, "FUSED_CHECKED", {})
    bank, x = unit(n, d, n).to(dtype), unit(b, d, b + 1).to(dtype)
    expected = value_and_gradient(reference_bank_logsumexp, x, bank, tau)
    got = value_and_gradient(lambda q, m, t: kernels.fused_bank_logsumexp(q, m, t, reference_bank_logsumexp), x, bank, tau)
    assert kernels.FUSED_CHECKED == {("cpu", dtype): True}  # the kernel ran, and agreed once
    for g, e in zip(got, expected):
        assert g.dtype == dtype and torch.allclose(g, e, rtol=tolerance * 10, atol=tolerance * 10)


def test_dispatch_uses_the_reference_for_a_bank_with_grad():
    """Live keys (Eq 9–11) need the bank's gradient, which only the reference gives."""
    bank = unit(20, 4, 15).requires_grad_()
    x = unit(3, 4, 16)
    bank_logsumexp(x, bank, 0.1).sum().backward()
    assert bank.grad is not None and bank.grad.abs().sum() > 0


class HostSyncs:
    """Counts the operations that read a tensor's values on the host: on a GPU each is a
    device-to-host sync. Python scalar conversions and ops whose output shape depends on the data;
    on the CPU nothing syncs, so this is how a CPU test sees what a GPU step would wait for."""

    METHODS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero", "unique",
               "masked_select")
    FUNCTIONS = ("nonzero", "unique", "unique_consecutive", "masked_select", "argwhere", "allclose", "equal")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))
        for name in self.FUNCTIONS:
            monkeypatch.setattr(torch, name, self._counted(getattr(torch, name)))

    def _counted(self, original):
        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        return counted

    def during(self, function):
        before = self.count
        function()
        return self.count - before


@pytest.mark.parametrize("chunk_size", [None, 16])
@pytest.mark.parametrize("with_round_state", [False, True])
def test_a_training_step_has_one_host_sync(monkeypatch, chunk_size, with_round_state):
    """Loss + backward + bank update: the bank's one combined check (indices in range, features
    finite) is the only sync; the loss, the round state's positives and the kernels have none."""
    torch.manual_seed(0)
    bank = MemoryBank(200, 8, seed=1)
    state = EntropyCurriculum(rounds=2, neighbours=2).discover(bank, round=1) if with_round_state else None
    criterion = NeighbourhoodLoss(0.1, chunk_size=chunk_size)
    model = torch.nn.Linear(12, 8)
    images = torch.randn(32, 12)
    indices = torch.tensor([3, 7, 7, 150, 199, 0, 42, 42] * 4)  # repeated indices too

    def loss_only():
        features = F.normalize(model(images), dim=1)
        return criterion(features, indices, bank, state), features

    def step():
        loss, features = loss_only()
        loss.backward()
        bank.update(indices, features)

    step()  # warm-up: the fused kernel's once-per-device check happens here
    syncs = HostSyncs(monkeypatch)
    assert syncs.during(lambda: bool(torch.tensor(True))) == 1  # the counter sees a sync
    assert syncs.during(lambda: loss_only()[0].backward()) == 0
    assert syncs.during(step) == 1
    features = F.normalize(torch.randn(32, 8), dim=1)
    assert syncs.during(lambda: bank.update(indices, features)) == 1


def test_temperature_is_checked_where_it_enters_only(monkeypatch):
    """The constructor checks τ once; the per-step forward never checks it again."""
    import and_plugin.loss as loss_module

    criterion = NeighbourhoodLoss(0.1)
    calls = []
    monkeypatch.setattr(loss_module, "check_positive", lambda *args: calls.append(args))
    criterion(unit(2, 4, 1), torch.tensor([0, 1]), unit(5, 4, 2))
    assert calls == []
    neighbourhood_loss(unit(2, 4, 1), unit(5, 4, 2), torch.tensor([[0], [1]]), temperature=0.2)
    assert calls == [("temperature", 0.2)]


def test_public_functions_name_bad_input():
    bank, x = unit(10, 4, 0), unit(2, 4, 1)
    with pytest.raises(ValueError, match=r"positives must lie in \[0, 10\), got 12"):
        neighbourhood_loss(x, bank, torch.tensor([[0, 12], [1, 2]]))
    with pytest.raises(ValueError, match="positive_mask: every query needs at least one positive"):
        neighbourhood_loss(x, bank, torch.tensor([[0], [1]]), torch.tensor([[True], [False]]))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        bank_logsumexp(x, bank, 0)
    with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\], got 'max'"):
        NeighbourhoodLoss()(x, torch.tensor([0, 1]), bank, reduction="max")
    state = RoundState(1, torch.ones(8, dtype=torch.bool), torch.zeros(8, 1, dtype=torch.long), torch.zeros(8))
    with pytest.raises(ValueError, match="round_state: it covers 8 samples but the bank has 10 rows"):
        NeighbourhoodLoss()(x, torch.tensor([0, 1]), bank, state)
