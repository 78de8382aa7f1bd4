"""GPU checks of the fast path's kernels (skipped without CUDA): the fused loss and the tiled refresh
on the GPU against the CPU reference."""

import pytest
import torch
import torch.nn.functional as F

from and_plugin.curriculum import entropy_and_neighbours
from and_plugin.loss import NeighbourhoodLoss, bank_logsumexp

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
