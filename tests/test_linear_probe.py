"""Linear probes on frozen features: pooling sizes, separable data, layer checks, schedules."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from and_plugin.backbones.base import Backbone
from and_plugin.data.base import IndexedDataset
from and_plugin.evaluation import (
    check_probe_layers,
    fit_linear_classifier,
    linear_accuracy,
    linear_probe,
    pool_features,
    probe_pool_size,
)
from and_plugin.evaluation.linear import _lr_at

torch.set_num_threads(1)


def blobs(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three 2-D Gaussian blobs (std 0.5) at (5, 0), (-5, 0), (0, 5): linearly separable."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    labels = torch.arange(3).repeat_interleave(n_per_class)
    return centres[labels] + 0.5 * torch.randn(len(labels), 2, generator=g), labels


def test_separable_features_reach_100_percent():
    x, y = blobs(30, seed=0)
    xt, yt = blobs(20, seed=1)
    clf = fit_linear_classifier(x, y, num_classes=3, epochs=10, lr=0.1, batch_size=16)
    assert linear_accuracy(clf, x, y) == 1.0
    assert linear_accuracy(clf, xt, yt) == 1.0
    assert isinstance(clf.linear, nn.Linear) and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                          for m in clf.modules())


def test_pool_sizes_follow_the_9600_budget():
    # ImageNet AlexNet: conv1 96x27x27, conv2 256x13x13, conv3/4 384x13x13, conv5 256x6x6.
    assert probe_pool_size(96, 27, 27) == (10, 10)  # 96 * 100 = 9600
    assert probe_pool_size(256, 13, 13) == (6, 6)  # 256 * 36 = 9216
    assert probe_pool_size(384, 13, 13) == (5, 5)  # 384 * 25 = 9600
    assert probe_pool_size(256, 6, 6) == (6, 6)  # 9216 <= 9600: not pooled
    assert probe_pool_size(256, 4, 4) == (4, 4)  # CIFAR AlexNet conv5: 4096
    assert probe_pool_size(2048, 7, 7) == (2, 2)  # 2048 * 4 = 8192
    assert pool_features(torch.ones(2, 384, 13, 13)).shape == (2, 9600)
    assert pool_features(torch.ones(2, 128)).shape == (2, 128)


def class_images(n: int, seed: int) -> IndexedDataset:
    """3x8x8 images: class c is a constant image of value c - 1 plus noise 0.05."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = (labels.float() - 1.0).view(-1, 1, 1, 1).expand(n, 3, 8, 8) + 0.05 * torch.randn(n, 3, 8, 8, generator=g)
    return IndexedDataset(TensorDataset(images, labels), labels, ["a", "b", "c"])


def probe_net() -> Backbone:
    torch.manual_seed(0)
    return Backbone({"conv1": nn.Conv2d(3, 4, 1), "fc": nn.Sequential(nn.Flatten(), nn.Linear(256, 8))}, 8)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 0], ids=["cached", "streamed"])
def test_probe_on_a_backbone_separates_classes(cache_bytes):
    net = probe_net()
    results = linear_probe(net, class_images(30, 0), class_images(15, 1), ["fc", "conv1"], epochs=5, lr=0.1,
                           batch_size=8, max_dim=64, cache_bytes=cache_bytes)
    assert list(results) == ["fc", "conv1"]
    assert results["conv1"].dim == 64  # 4 channels: side isqrt(64 // 4) = 4 → 4 * 4 * 4
    assert results["fc"].dim == 8
    assert all(r.top1 == 1.0 and r.train_top1 == 1.0 for r in results.values())
    assert all(r.cached == (cache_bytes > 0) for r in results.values())
    assert net.training and all(p.requires_grad for p in net.parameters())  # state restored


def test_test_labels_do_not_influence_training():
    net = probe_net()
    test = class_images(15, 1)
    flipped = IndexedDataset(TensorDataset(test.base.tensors[0], (test.targets + 1) % 3), (test.targets + 1) % 3,
                             ["a", "b", "c"])
    a = linear_probe(net, class_images(30, 0), test, ["conv1"], epochs=3, batch_size=8, max_dim=64)["conv1"]
    b = linear_probe(net, class_images(30, 0), flipped, ["conv1"], epochs=3, batch_size=8, max_dim=64)["conv1"]
    assert a.train_top1 == b.train_top1 and (a.top1, b.top1) == (1.0, 0.0)


def test_unknown_layer_names_the_layer_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'; allowed layers of this backbone: \['conv1', 'fc'\]"):
        check_probe_layers(probe_net(), ["conv1", "conv9"])
    with pytest.raises(ValueError, match="empty list"):
        check_probe_layers(probe_net(), [])
    with pytest.raises(TypeError, match="no named layers"):
        check_probe_layers(nn.Linear(2, 2), ["fc"])
    assert check_probe_layers(probe_net(), ["fc", "conv1", "fc"]) == ["fc", "conv1"]


def test_schedules_and_their_errors():
    assert [_lr_at("step", 0.1, 0, 100, e, 10) for e in (0, 5, 6, 7, 8, 9)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert [_lr_at("cosine", 0.1, s, 100, 0, 10) for s in (0, 50, 100)] == pytest.approx([0.1, 0.05, 0.0])
    x, y = blobs(4, 0)
    with pytest.raises(ValueError, match=r"schedule must be one of \['cosine', 'step'\], got 'linear'"):
        fit_linear_classifier(x, y, 3, schedule="linear")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        fit_linear_classifier(x, y, 3, epochs=0)
