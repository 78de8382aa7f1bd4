"""From a :class:`~and_plugin.config.Config` to the pieces a run needs: backbone and data sets.

Every builder here first imports ``run.imports`` (:mod:`and_plugin.plugins`), so components
registered in your own modules are found by name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from .backbones import build_backbone
from .config import Config, ConfigError
from .data import available_presets, build_dataset, build_transform, dataset_info, dataset_keywords
from .data.base import IndexedDataset
from .plugins import import_modules
from .registry import BACKBONES, DATASETS


@dataclass
class RunParts:
    """Everything :class:`~and_plugin.Trainer` takes besides the config.

    Attributes:
        model: The backbone, (B, C, H, W) → unit vectors (B, d).
        train_set: Training images with the training augmentation.
        eval_train_set: The same training images with the test transform (recomputed kNN).
        test_set: Test images with the test transform.
    """

    model: nn.Module
    train_set: IndexedDataset
    eval_train_set: IndexedDataset
    test_set: IndexedDataset


def build_model(config: Config) -> nn.Module:
    """Builds the configured backbone; grey data sets get ``in_channels=1`` where supported."""
    import_modules(config.run.imports)
    kwargs: dict[str, Any] = dict(config.model.kwargs)
    name = config.model.backbone
    if not name.startswith("torchvision:"):
        BACKBONES.get(name)  # raises the registry's error listing every known backbone
    channels = _channels(config)
    if channels != 3 and "in_channels" not in kwargs and name in BACKBONES:
        if "in_channels" in inspect.signature(BACKBONES.get(name)).parameters:
            kwargs["in_channels"] = channels
    return build_backbone(name, embedding_dim=config.model.embedding_dim, **kwargs)


def build_datasets(config: Config) -> tuple[IndexedDataset, IndexedDataset, IndexedDataset]:
    """(train with augmentation, train with test transform, test) for the configured data set."""
    import_modules(config.run.imports)
    data = config.data
    DATASETS.get(data.dataset)  # the registry's error, listing every known data set
    _check_data_kwargs(data.dataset, data.kwargs)
    preset = data.transform or dataset_info(data.dataset).preset
    if preset is None:
        raise ConfigError(
            f"data.transform: got None, and data set {data.dataset!r} was registered without a default preset; "
            f"set data.transform to one of {available_presets()} (or register it with info=DatasetInfo(preset=...))"
        )
    train_transform = build_transform(preset, train=True)
    test_transform = build_transform(preset, train=False)
    common = {"root": data.root, "download": data.download, **data.kwargs}
    train_set = build_dataset(data.dataset, split="train", transform=train_transform, subset=data.subset, **common)
    eval_train_set = build_dataset(data.dataset, split="train", transform=test_transform, subset=data.subset, **common)
    test_set = build_dataset(data.dataset, split="test", transform=test_transform, subset=data.test_subset, **common)
    return train_set, eval_train_set, test_set


def build_run(config: Config) -> RunParts:
    """Backbone and the three data sets of a run; the initial weights are drawn from ``run.seed``."""
    from .trainer import seed_everything

    train_set, eval_train_set, test_set = build_datasets(config)
    seed_everything(config.run.seed)
    return RunParts(build_model(config), train_set, eval_train_set, test_set)


#: Builder keywords that have their own config key.
_KEYS_OF = {"root": "is data.root; set it there", "download": "is data.download; set it there",
            "subset": "is data.subset; set it there", "transform": "is data.transform (a preset); set it there",
            "split": "is set by the run (it builds the train and the test split); remove it"}


def _check_data_kwargs(dataset: str, kwargs: dict[str, Any]) -> None:
    """``data.kwargs`` holds only keywords of the data set's own (a one-line ConfigError otherwise)."""
    accepted = dataset_keywords(dataset)
    for key in kwargs:
        if key in _KEYS_OF:
            raise ConfigError(f"data.kwargs: {key!r} {_KEYS_OF[key]}")
        if accepted is not None and key not in accepted:
            raise ConfigError(
                f"data.kwargs: data set {dataset!r} has no keyword {key!r}; its own keywords: "
                f"{', '.join(accepted) or 'none'} (root, download and subset are data.root, data.download and "
                "data.subset)"
            )


def _channels(config: Config) -> int:
    if "channels" in config.data.kwargs:
        return int(config.data.kwargs["channels"])
    try:
        return dataset_info(config.data.dataset).channels
    except ValueError:
        return 3
