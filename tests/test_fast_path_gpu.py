"""GPU checks of the fast path's kernels (skipped without CUDA): the fused and streamed loss and the
tiled refresh on the GPU against the CPU reference; the host syncs of one training step."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from and_plugin.curriculum import EntropyCurriculum, entropy_and_neighbours, reference_entropy_and_neighbours
from and_plugin.loss import NeighbourhoodLoss, bank_logsumexp, reference_bank_logsumexp
from and_plugin.memory_bank import MemoryBank

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)"),
]


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_bank_logsumexp_on_cuda_matches_the_plain_cpu_path(dtype):
    bank = unit(5000, 128, 0)
    x = unit(300, 128, 1).requires_grad_()
    reference = torch.logsumexp(x @ bank.T / 0.07, dim=1)
    (grad_reference,) = torch.autograd.grad(reference.sum(), x)
    xc = x.detach().cuda().to(dtype).requires_grad_()
    lse = bank_logsumexp(xc, bank.cuda().to(dtype), 0.07)
    (grad,) = torch.autograd.grad(lse.float().sum(), xc)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    assert torch.allclose(lse.float().cpu(), reference, atol=tolerance, rtol=tolerance)
    assert torch.allclose(grad.float().cpu(), grad_reference, atol=tolerance * 10, rtol=tolerance)


def test_neighbourhood_loss_on_cuda_equals_cpu():
    bank = unit(4000, 128, 2)
    x = unit(256, 128, 3)
    idx = torch.randperm(4000, generator=torch.Generator().manual_seed(4))[:256]
    cpu = NeighbourhoodLoss(0.1)(x, idx, bank)
    cuda = NeighbourhoodLoss(0.1)(x.cuda(), idx.cuda(), bank.cuda())
    assert float(cuda) == pytest.approx(float(cpu), rel=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_refresh_on_cuda_equals_cpu(k):
    bank = unit(20_000, 128, 5)
    entropy, nearest = entropy_and_neighbours(bank, 0.1, k)
    entropy_cuda, nearest_cuda = entropy_and_neighbours(bank.cuda(), 0.1, k, max_chunk_bytes=2 * 4 * 4096 * 4096)
    assert torch.allclose(entropy_cuda.cpu(), entropy, rtol=1e-4, atol=1e-4)
    assert (nearest_cuda.cpu().sort(dim=1).values == nearest.sort(dim=1).values).float().mean() > 0.999


@pytest.mark.parametrize("chunk", [1000, 65536])
def test_streamed_bank_logsumexp_on_cuda_equals_the_reference(chunk):
    bank = unit(5000, 128, 6)
    x = unit(200, 128, 7).requires_grad_()
    reference = reference_bank_logsumexp(x, bank, 0.07)
    (grad_reference,) = torch.autograd.grad(reference.sum(), x)
    xc = x.detach().cuda().requires_grad_()
    lse = bank_logsumexp(xc, bank.cuda(), 0.07, chunk_size=chunk)
    (grad,) = torch.autograd.grad(lse.sum(), xc)
    assert torch.allclose(lse.cpu(), reference, atol=1e-4, rtol=1e-4)
    assert torch.allclose(grad.cpu(), grad_reference, atol=1e-3, rtol=1e-4)


def test_refresh_kernel_on_cuda_equals_the_reference():
    bank = unit(3000, 64, 8)
    entropy, nearest = entropy_and_neighbours(bank.cuda(), 0.1, 2, max_chunk_bytes=2 * 4 * 1000 * 1000)
    expected_entropy, expected_nearest = reference_entropy_and_neighbours(bank, 0.1, 2)
    assert torch.allclose(entropy.cpu(), expected_entropy, rtol=1e-4, atol=1e-4)
    assert (nearest.cpu().sort(dim=1).values == expected_nearest.sort(dim=1).values).float().mean() > 0.999


@pytest.mark.parametrize("chunk_size", [None, 4096])
def test_a_training_step_on_cuda_syncs_once(chunk_size):
    """CUDA's own sync detector over loss + backward + bank update: only the bank's combined check."""
    device = torch.device("cuda")
    bank = MemoryBank(20_000, 128, seed=0).to(device)
    state = EntropyCurriculum(rounds=2, neighbours=1).discover(bank, round=1).to(device)
    criterion = NeighbourhoodLoss(0.1, chunk_size=chunk_size)
    model = torch.nn.Linear(64, 128).to(device)
    images = torch.randn(256, 64, device=device)
    indices = torch.randint(0, 20_000, (256,), generator=torch.Generator().manual_seed(9)).to(device)

    def step():
        features = F.normalize(model(images), dim=1)
        criterion(features, indices, bank, state).backward()
        bank.update(indices, features)

    step()  # warm-up: the fused kernel's once-per-device check
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
