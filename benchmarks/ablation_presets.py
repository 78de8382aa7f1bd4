"""Augmentation presets of the accuracy study's augmentation ablation, loaded with ``run.imports``.

The data sets' own presets are the default strength; this registers a weaker one beside them
(none at all), the way a user adds a preset of their own (see docs/howto/custom-components.md).
It has no on-device twin, so settings using it run with ``data.gpu_resident=false``::

    python benchmarks/accuracy.py run ... -- run.imports=[benchmarks/ablation_presets.py] \\
        data.transform=fashion_mnist_no_aug data.gpu_resident=false data.num_workers=0
"""

from __future__ import annotations

from torchvision.transforms import v2 as T

from and_plugin import PRESETS, PresetInfo
from and_plugin.data import to_tensor_and_normalize
from and_plugin.data.transforms import FASHION_MNIST_NORMALIZE


@PRESETS.register("fashion_mnist_no_aug", info=PresetInfo(28, 1, FASHION_MNIST_NORMALIZE))
def fashion_mnist_no_aug(train: bool, size: int, normalize: dict) -> T.Compose:
    """No augmentation: training images go through the test pipeline (every epoch sees the same view)."""
    return T.Compose([T.Resize(size), T.CenterCrop(size), *to_tensor_and_normalize(normalize)])
