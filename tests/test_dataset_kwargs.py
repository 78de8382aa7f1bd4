"""Keywords a data set does not take are named in one line, from the config and from Python."""

from __future__ import annotations

import pytest

from and_plugin import ConfigError, load_config
from and_plugin.build import build_datasets
from and_plugin.data import build_dataset, dataset_keywords


def test_config_names_the_key_and_the_accepted_ones():
    config = load_config(None, ["data.dataset=digits", "data.kwargs.colour=true"])
    with pytest.raises(ConfigError, match=r"^data.kwargs: data set 'digits' has no keyword 'colour'; its own "
                                          r"keywords: none \(root, download and subset are data.root, "
                                          r"data.download and data.subset\)$"):
        build_datasets(config)
    config = load_config(None, ["data.dataset=synthetic", "data.kwargs.root=/data"])
    with pytest.raises(ConfigError, match=r"^data.kwargs: 'root' is data.root; set it there$"):
        build_datasets(config)


def test_python_builders_name_it_too():
    assert dataset_keywords("digits") == []
    assert dataset_keywords("synthetic") == ["image_size", "channels", "num_classes", "train_size", "test_size", "seed"]
    with pytest.raises(ValueError, match=r"^digits: unknown keyword 'colour'; digits takes root, split, transform, "
                                         r"download, subset$"):
        build_dataset("digits", colour=True)
    with pytest.raises(ValueError, match=r"^synthetic: unknown keyword 'size'; synthetic takes root, split, "
                                         r"transform, download, subset, image_size, channels, num_classes, "
                                         r"train_size, test_size, seed$"):
        build_dataset("synthetic", size=8)
    assert len(build_dataset("synthetic", train_size=12, image_size=8)) == 12
