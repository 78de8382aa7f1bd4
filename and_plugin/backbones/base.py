"""The backbone contract: named stages ending in Linear → d and L2 normalisation."""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable

import torch.nn.functional as F
from torch import Tensor, nn


class Backbone(nn.Module):
    """A feature extractor made of named stages applied in order.

    The last stage must be named ``"fc"`` and produce the ``embedding_dim`` features; ``forward``
    L2-normalises them. Every stage's output can be read by name (``conv1`` ... ``conv5``,
    ``fc`` for AlexNet/ResNets), which is what the linear probes of Tables 1–2 use.

    Args:
        stages: Ordered ``name → module``; applied one after the other. The last is ``"fc"``.
        embedding_dim: Output size of the ``fc`` stage (128 in the paper).

    Raises:
        ValueError: If the last stage is not named ``"fc"`` or ``embedding_dim`` < 1.
        TypeError: If a stage is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = Backbone({"conv1": nn.Flatten(), "fc": nn.Linear(12, 4)}, embedding_dim=4)
        >>> z = net(torch.randn(2, 3, 2, 2))
        >>> z.shape, torch.allclose(z.norm(dim=1), torch.ones(2))
        (torch.Size([2, 4]), True)
    """

    def __init__(self, stages: OrderedDict[str, nn.Module] | dict[str, nn.Module], embedding_dim: int) -> None:
        super().__init__()
        embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        stages = OrderedDict(stages)
        if not stages or next(reversed(stages)) != "fc":
            raise ValueError(f"stages: the last stage must be named 'fc', got {list(stages)}")
        not_modules = [name for name, stage in stages.items() if not isinstance(stage, nn.Module)]
        if not_modules:
            raise TypeError(f"stages: every stage must be an nn.Module; not modules: {not_modules}")
        self.stages = nn.ModuleDict(stages)
        self.embedding_dim = embedding_dim

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the stages whose outputs can be read, in order."""
        return tuple(self.stages.keys())

    def forward(self, x: Tensor) -> Tensor:
        """Computes L2-normalised embeddings.

        Args:
            x: Images, shape (B, C, H, W).

        Returns:
            Unit vectors, shape (B, embedding_dim).
        """
        for stage in self.stages.values():
            x = stage(x)
        return F.normalize(x, dim=1)

    def forward_layers(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Returns the raw outputs of the named stages (``fc`` is returned unnormalised).

        Stops after the last requested stage, so probing ``conv1`` costs one stage.

        Args:
            x: Images, shape (B, C, H, W).
            layers: Stage names, any subset of ``layer_names``.

        Returns:
            ``name → tensor``; conv stages give (B, C', H', W'), ``fc`` gives (B, embedding_dim).
        """
        wanted = list(layers)
        unknown = [name for name in wanted if name not in self.stages]
        if unknown:
            raise ValueError(f"layers: unknown layer(s) {unknown}; this backbone has {list(self.layer_names)}")
        remaining = set(wanted)
        out: dict[str, Tensor] = {}
        for name, stage in self.stages.items():
            if not remaining:
                break
            x = stage(x)
            if name in remaining:
                out[name] = x
                remaining.discard(name)
        return out


def check_positive_int(name: str, value: object) -> int:
    """Validates an integer argument that must be at least 1.

    Args:
        name: The parameter's name, used in the error message.
        value: The value passed by the user.

    Returns:
        ``value`` as an ``int``.

    Raises:
        ValueError: Naming the parameter, the value and what is allowed.

    Example:
        >>> check_positive_int("embedding_dim", 128)
        128
    """
    try:
        as_int = None if isinstance(value, bool) else operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        as_int = None
    if as_int is None or as_int < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return as_int


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["Backbone", "check_positive_int", "count_parameters"]
