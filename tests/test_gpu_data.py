"""The on-device data path (data.gpu_resident): augmentation maths against torchvision, parameter
statistics, determinism, batch order, and a resumable training run — all on the CPU; GPU-only
checks are marked ``gpu``."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from conftest import tiny_backbone

from and_plugin import NeighbourhoodLoss, Trainer, load_config
from and_plugin.data.base import IndexedDataset
from and_plugin.data.datasets import ArrayImageDataset, FileImageDataset
from and_plugin.data.gpu import (
    AugmentSpec,
    DeviceBatches,
    GPUAugment,
    augment_spec,
    dataset_to_uint8,
    hsv_to_rgb,
    rgb_to_hsv,
)
from and_plugin.memory_bank import MemoryBank
from and_plugin.sampling import GlobalBatchSampler

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)")


def uint8_images(n, channels=3, size=32, seed=0):
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def unnormalised(preset="cifar", **changes):
    """The preset's augmentation without normalisation, so outputs are pixel values in [0, 1]."""
    spec = augment_spec(preset)
    return GPUAugment(AugmentSpec(**{**spec.__dict__, "mean": (0.0,) * spec.channels, "std": (1.0,) * spec.channels, **changes}))


def test_shapes_dtypes_and_ranges():
    images = uint8_images(16)
    out = GPUAugment(augment_spec("cifar"))(images, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    raw = unnormalised()(images, torch.Generator().manual_seed(0))
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    expected = (raw - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(out, expected, atol=1e-5)
    grey = GPUAugment(augment_spec("fashion_mnist"))(uint8_images(4, channels=1, size=28))
    assert grey.shape == (4, 1, 28, 28)
    digits = GPUAugment(augment_spec("digits"))(uint8_images(4, channels=1, size=8))
    assert digits.shape == (4, 1, 16, 16)


def test_full_crop_without_colour_is_the_identity():
    images = uint8_images(4)
    augment = GPUAugment(AugmentSpec(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0, grayscale_p=0.0))
    assert torch.equal(augment(images) * 255, images.float())


def test_crop_matches_torchvision_resized_crop():
    images = uint8_images(3)
    augment = GPUAugment(AugmentSpec(size=32, jitter=0.0, grayscale_p=0.0))
    params = augment.sample_params(3, 32, 32, torch.Generator().manual_seed(0))
    params.crop = torch.tensor([[5.0, 7.0, 13.0, 20.0], [0.0, 0.0, 32.0, 32.0], [10.0, 3.0, 22.0, 17.0]])
    params.flip = torch.tensor([False, False, True])
    out = augment.apply(images, params)
    for k, (top, left, h, w) in enumerate(params.crop.int().tolist()):
        expected = TF.resized_crop(images[k].float() / 255, top, left, h, w, [32, 32], antialias=False)
        if params.flip[k]:
            expected = TF.horizontal_flip(expected)
        assert torch.allclose(out[k], expected, atol=1e-5), k


def test_colour_jitter_matches_torchvision_formulas_in_the_given_order():
    images = uint8_images(2)
    augment = unnormalised(scale=(1.0, 1.0), ratio=(1.0, 1.0), grayscale_p=0.0)
    params = augment.sample_params(2, 32, 32, torch.Generator().manual_seed(0))
    params.factors = torch.tensor([[1.3, 0.7, 1.25, 0.3], [0.65, 1.35, 0.8, -0.15]])
    params.order = torch.tensor([[0, 1, 2, 3], [3, 2, 0, 1]])
    out = augment.apply(images, params)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for k in range(2):
        expected = images[k].float() / 255
        for step in params.order[k].tolist():
            expected = ops[step](expected, float(params.factors[k, step]))
        assert torch.allclose(out[k], expected, atol=1e-5), k


def test_hsv_round_trip_and_torchvision_hue():
    rgb = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-6)
    hsv = rgb_to_hsv(rgb)
    shifted = hsv_to_rgb(torch.stack([torch.remainder(hsv[:, 0] + 0.3, 1.0), hsv[:, 1], hsv[:, 2]], dim=1))
    assert torch.allclose(shifted, TF.adjust_hue(rgb, 0.3), atol=1e-5)


def test_crop_statistics_match_torchvision_sampler():
    n = 20_000
    crop = GPUAugment(augment_spec("cifar")).sample_params(n, 32, 32, torch.Generator().manual_seed(0)).crop
    top, left, h, w = crop.unbind(dim=1)
    area = h * w / (32 * 32)
    # Integer rounding of the sides widens the bounds by about one pixel.
    assert area.min() >= 0.2 * (1 - 2 / 32) ** 2 - 1e-6 and area.max() <= 1.0
    assert (w / h).min() >= 0.75 * (1 - 2 / 14) and (w / h).max() <= (4 / 3) * (1 + 2 / 14)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    torch.manual_seed(0)
    reference = torch.tensor(
        [T.RandomResizedCrop.get_params(torch.empty(3, 32, 32), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)],
        dtype=torch.float32,
    )
    ref_area = reference[:, 2] * reference[:, 3] / 1024
    assert float(area.mean()) == pytest.approx(float(ref_area.mean()), abs=0.01)
    assert float(area.std()) == pytest.approx(float(ref_area.std()), abs=0.01)
    assert float((w / h).log().mean()) == pytest.approx(float((reference[:, 3] / reference[:, 2]).log().mean()), abs=0.01)


def test_crop_fallback_is_the_centre_crop():
    # No area in [0.99, 1] of a 4x32 image has a ratio in [3/4, 4/3]: torchvision falls back.
    augment = GPUAugment(AugmentSpec(size=8, scale=(0.99, 1.0), jitter=0.0, grayscale_p=0.0))
    crop = augment.sample_params(5, 4, 32, torch.Generator().manual_seed(0)).crop
    assert crop.tolist() == [[0.0, 13.0, 4.0, 5.0]] * 5  # h = 4, w = round(4 * 4/3) = 5, centred


def test_grayscale_fraction_and_effect():
    n = 20_000
    params = GPUAugment(augment_spec("cifar")).sample_params(n, 32, 32, torch.Generator().manual_seed(1))
    assert float(params.gray.float().mean()) == pytest.approx(0.2, abs=0.01)
    order_counts = torch.stack([(params.order[:, 0] == s).float().mean() for s in range(4)])
    assert torch.allclose(order_counts, torch.full((4,), 0.25), atol=0.015)
    factors = params.factors
    assert factors[:, :3].min() >= 0.6 and factors[:, :3].max() <= 1.4
    assert factors[:, 3].min() >= -0.4 and factors[:, 3].max() <= 0.4
    augment = unnormalised()
    images = uint8_images(400, seed=2)
    params = augment.sample_params(400, 32, 32, torch.Generator().manual_seed(3))
    out = augment.apply(images, params)
    equal_channels = (out[:, 0] == out[:, 1]).flatten(1).all(dim=1) & (out[:, 1] == out[:, 2]).flatten(1).all(dim=1)
    assert torch.equal(equal_channels, params.gray)


def test_determinism_under_a_seed():
    images = uint8_images(8)
    augment = GPUAugment(augment_spec("cifar"))
    first = augment(images, torch.Generator().manual_seed(7))
    again = augment(images, torch.Generator().manual_seed(7))
    other = augment(images, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_rotation_fills_black_outside_the_crop():
    augment = unnormalised("digits")
    images = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    params = augment.sample_params(2, 8, 8, torch.Generator().manual_seed(0))
    params.angle = torch.tensor([0.0, math.radians(10)])
    out = augment.apply(images, params)
    assert torch.allclose(out[0], torch.ones(1, 16, 16))  # no rotation: the white crop stays white
    assert out[1, 0, 0, 0] == 0 and out[1, 0, 8, 8] == pytest.approx(1.0)  # a corner rotated in from outside is black


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="scale must satisfy"):
        AugmentSpec(size=32, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="jitter_order must be one of"):
        AugmentSpec(size=32, jitter_order="sorted")
    with pytest.raises(ValueError, match="images must be uint8"):
        GPUAugment(augment_spec("cifar"))(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown preset"):
        augment_spec("nope")


def test_dataset_to_uint8_reads_arrays_files_and_refuses_mixed_sizes(tmp_path):
    from PIL import Image

    array = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    dataset = IndexedDataset(ArrayImageDataset(array, [0] * 5), [0] * 5, ["a"])
    assert torch.equal(dataset_to_uint8(dataset), torch.from_numpy(array).permute(0, 3, 1, 2))
    paths = []
    for k in range(3):
        path = tmp_path / f"{k}.png"
        Image.fromarray(array[k]).save(path)
        paths.append(str(path))
    files = IndexedDataset(FileImageDataset(paths, [0] * 3), [0] * 3, ["a"])
    assert torch.equal(dataset_to_uint8(files), torch.from_numpy(array[:3]).permute(0, 3, 1, 2))
    Image.fromarray(array[0, :5]).save(paths[1])
    with pytest.raises(ValueError, match="data.gpu_resident: needs every training image at one size"):
        dataset_to_uint8(files)


def test_device_batches_follow_the_sampler_and_the_rank_layout():
    images = uint8_images(10)
    augment = GPUAugment(augment_spec("cifar"))
    single = DeviceBatches(images, augment, GlobalBatchSampler(10, 4, seed=3), seed=5)
    batches = list(single.epoch(2))
    expected = GlobalBatchSampler(10, 4, seed=3)
    expected.set_epoch(2)
    assert [b[1].tolist() for b in batches] == list(expected)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, single.epoch(2)))  # same epoch, same pixels
    assert not torch.equal(batches[0][0], next(iter(single.epoch(3)))[0])
    ranks = [list(DeviceBatches(images, augment, GlobalBatchSampler(10, 4, r, 2, seed=3), seed=5).epoch(2)) for r in range(2)]
    for k, (images_k, indices_k) in enumerate(batches):
        joined = torch.cat([ranks[0][k][0], ranks[1][k][0]])
        assert torch.equal(torch.cat([ranks[0][k][1], ranks[1][k][1]]), indices_k)
        assert torch.allclose(joined, images_k, atol=1e-6)  # each rank augments its slice identically


def config(tmp_path, *extra):
    return load_config(None, [
        f"run.output_dir={tmp_path}", "run.device=cpu", "run.progress=false", "run.threads=1",
        "optim.epochs_per_round=2", "method.rounds=1", "data.batch_size=16", "model.embedding_dim=16",
        "data.dataset=synthetic", "data.transform=cifar", "data.gpu_resident=true", "eval.bank_knn=false",
        *extra,
    ])


def synthetic_sets():
    from and_plugin.data import build_dataset, build_transform

    test = build_transform("cifar", train=False)
    train = build_dataset("synthetic", split="train", image_size=32, train_size=48, num_classes=4, transform=test)
    held = build_dataset("synthetic", split="test", image_size=32, num_classes=4, transform=test)
    return train, held


def test_gpu_resident_training_runs_and_resumes_exactly(tmp_path):
    train, test = synthetic_sets()
    straight = Trainer(config(tmp_path / "a", "run.deterministic=true"), tiny_backbone(), train, train, test)
    assert straight.device_batches is not None
    result = straight.fit()
    assert [r["round"] for r in result.rounds] == [0, 1]
    first = Trainer(config(tmp_path / "b", "run.deterministic=true"), tiny_backbone(), train, train, test)
    first.fit(stop_after_epochs=3)  # stops after round 1 epoch 0: mid-round
    resumed = Trainer(config(tmp_path / "b", "run.deterministic=true", "run.resume=true"),
                      tiny_backbone(seed=123), train, train, test)
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert torch.equal(straight.bank.bank, resumed.bank.bank)
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_gpu_resident_refuses_a_dataset_without_preset(tmp_path):
    train, test = synthetic_sets()
    with pytest.raises(ValueError, match="data.gpu_resident: the 'fashion_mnist' preset expects 1 channel"):
        Trainer(config(tmp_path, "data.transform=fashion_mnist"), tiny_backbone(), train, train, test)


def test_bf16_autocast_loss_and_gradients_match_fp32():
    """The fast path (bf16 autocast backbone, fp32 loss) against the fp32 path, within bf16 tolerance."""
    images = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    indices = torch.arange(0, 64, 2)
    bank = MemoryBank(64, 16, seed=1)
    criterion = NeighbourhoodLoss(0.1)
    results = []
    for precision in ("fp32", "bf16"):
        model = tiny_backbone()
        context = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
        with context:
            features = model(images)
        loss = criterion(features.float(), indices, bank)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()], features.dtype))
    (loss32, grads32, dtype32), (loss16, grads16, dtype16) = results
    assert dtype32 == torch.float32 and dtype16 == torch.bfloat16
    assert float(loss16) == pytest.approx(float(loss32), rel=1e-2)
    for g32, g16 in zip(grads32, grads16):
        assert float((g16 - g32).norm() / g32.norm()) < 0.05
        assert float(F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)) > 0.998


@pytest.mark.gpu
@requires_cuda
def test_cuda_augmentation_equals_cpu():
    images = uint8_images(64)
    augment = GPUAugment(augment_spec("cifar"))
    params = augment.sample_params(64, 32, 32, torch.Generator().manual_seed(0))
    cpu = augment.apply(images, params)
    cuda = augment.apply(images.cuda(), params.to("cuda")).cpu()
    assert torch.allclose(cpu, cuda, atol=1e-4)


@pytest.mark.gpu
@requires_cuda
def test_cuda_device_batches_stay_on_the_device():
    source = DeviceBatches(uint8_images(40), GPUAugment(augment_spec("cifar")), GlobalBatchSampler(40, 16), "cuda")
    for images, indices in source.epoch(0):
        assert images.is_cuda and indices.is_cuda and images.dtype == torch.float32
