"""Linear probes: linear classifiers on the frozen features of named backbone layers.

The protocol of Tables 1–2 of the paper (which follows NPID, Wu et al. 2018, and the
Zhang et al. 2016 / DeepCluster conv-layer protocol):

- The backbone is frozen and in eval mode (BatchNorm uses its running statistics).
- Each requested layer (``conv1`` ... ``conv5``, ``fc``; read with
  :meth:`~and_plugin.backbones.base.Backbone.forward_layers`) gets its own linear classifier,
  trained with cross-entropy on the training images' labels.
- Conv feature maps (C, H, W) are adaptively average-pooled to the largest square side s with
  C·s² ≤ ``max_dim`` (9,600 by default) and flattened. On the ImageNet AlexNet this gives exactly
  the classic sizes: conv1 96·10² = 9,600, conv2 256·6² = 9,216, conv3/conv4 384·5² = 9,600,
  conv5 256·6² = 9,216 (no pooling). Maps already small enough are not pooled (CIFAR AlexNet
  conv5: 256·4² = 4,096). ``fc`` is the raw 128-d output before L2 normalisation.
- The classifier is a plain ``nn.Linear`` — no BatchNorm layer. Features are standardised with
  the per-dimension mean and standard deviation of the *training* features, computed once and
  then fixed (an affine map that could be folded into the linear layer; it only makes one
  learning rate work for every layer, whose activation scales differ by orders of magnitude).
- Training images go through the *test* transform (resize + centre crop, no augmentation), so
  their features can be extracted once and cached. NPID's ImageNet probe trains on augmented
  crops instead; pass the augmenting training set to :func:`linear_probe` (with
  ``cache_bytes=0``) to do that.
- Schedule: SGD, momentum 0.9, weight decay 1e-4 (DeepCluster's linear-probe value), batch 256,
  a fixed number of epochs with cosine decay per step (or ``schedule="step"``: x0.1 at 60 % and
  80 % of the epochs), zero-initialised weights. No model selection at all: the test set is used
  once, for the reported top-1 after the last epoch; test labels never influence training.

Layers whose cached features fit ``cache_bytes`` are extracted once (several layers per pass
when they fit together); the others are streamed: every epoch runs the frozen backbone over
the training set and trains all streamed layers' classifiers from the same forward pass.

Example:
    >>> import torch
    >>> from and_plugin.evaluation.linear import fit_linear_classifier, linear_accuracy
    >>> x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]]); y = torch.tensor([0, 0, 1, 1])
    >>> clf = fit_linear_classifier(x, y, num_classes=2, epochs=20, lr=0.5, batch_size=4)
    >>> linear_accuracy(clf, x, y)
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._validation import check_choice, check_int_at_least, check_positive
from ..data.labels import targets_of
from ..progress import progress_bar

__all__ = [
    "DEFAULT_MAX_DIM",
    "LinearClassifier",
    "LinearProbeResult",
    "check_probe_layers",
    "fit_linear_classifier",
    "linear_accuracy",
    "linear_probe",
    "pool_features",
    "probe_pool_size",
]

#: Largest flattened conv feature size a probe reads (the ~9k of the Zhang et al. protocol).
DEFAULT_MAX_DIM = 9600
SCHEDULES = ("cosine", "step")
_STEP_MILESTONES = (0.6, 0.8)


def probe_pool_size(channels: int, height: int, width: int, max_dim: int = DEFAULT_MAX_DIM) -> tuple[int, int]:
    """Spatial size a (C, H, W) map is average-pooled to before its linear probe.

    The largest square side s with C·s² ≤ ``max_dim`` (at least 1), capped by H and W, so maps
    that are already small enough stay as they are.

    Args:
        channels: C.
        height: H.
        width: W.
        max_dim: Budget of flattened features.

    Returns:
        ``(h, w)`` with h ≤ H and w ≤ W.

    Example:
        >>> probe_pool_size(96, 27, 27), probe_pool_size(256, 13, 13), probe_pool_size(256, 4, 4)
        ((10, 10), (6, 6), (4, 4))
    """
    if channels * height * width <= max_dim:
        return height, width
    side = max(1, math.isqrt(max_dim // channels))
    return min(side, height), min(side, width)


def pool_features(x: Tensor, max_dim: int = DEFAULT_MAX_DIM) -> Tensor:
    """Flattens one layer's output for a linear probe.

    Args:
        x: A conv map (B, C, H, W) — pooled with :func:`probe_pool_size` — or features (B, D).

    Returns:
        Shape (B, D'), float32.
    """
    if x.dim() == 4:
        size = probe_pool_size(x.shape[1], x.shape[2], x.shape[3], max_dim)
        if size != tuple(x.shape[2:]):
            x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1).float()


def check_probe_layers(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """Validates the layer names a probe reads.

    Args:
        model: A :class:`~and_plugin.backbones.base.Backbone` (anything with ``layer_names`` and
            ``forward_layers``).
        layers: Requested names, e.g. ``["conv5", "fc"]``.

    Returns:
        The names, duplicates removed, in the requested order.

    Raises:
        TypeError: If the model does not expose named layers.
        ValueError: For an empty list or an unknown name; the message lists the allowed names.
    """
    if not hasattr(model, "forward_layers") or not hasattr(model, "layer_names"):
        raise TypeError(
            f"linear probe: the model ({type(model).__name__}) has no named layers (forward_layers); "
            "build it with and_plugin.build_backbone or wrap it with and_plugin.wrap_backbone"
        )
    if isinstance(layers, str):
        layers = [layers]
    wanted = list(dict.fromkeys(layers))
    allowed = list(model.layer_names)
    if not wanted:
        raise ValueError(f"probe_layers: got an empty list; allowed layers of this backbone: {allowed}")
    for name in wanted:
        if name not in allowed:
            raise ValueError(f"probe_layers: unknown layer {name!r}; allowed layers of this backbone: {allowed}")
    return wanted


class LinearClassifier(nn.Module):
    """Fixed standardisation followed by one linear layer (no BatchNorm).

    Args:
        dim: Input feature size D.
        num_classes: Output classes C.
        mean: Per-dimension feature mean (D,) of the training features; zeros if None.
        std: Per-dimension standard deviation (D,); ones if None.
    """

    def __init__(self, dim: int, num_classes: int, mean: Tensor | None = None, std: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.detach().float().clone())
        self.register_buffer("std", torch.ones(dim) if std is None else std.detach().float().clone())
        self.linear = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, C) of features (B, D)."""
        return self.linear((x - self.mean) / self.std)


@dataclass
class LinearProbeResult:
    """The outcome of one layer's probe.

    Attributes:
        layer: The layer read.
        dim: Size of its (pooled, flattened) features.
        top1: Test top-1 accuracy in [0, 1], after the last epoch.
        train_top1: Training accuracy in [0, 1] over the mini-batches of the last epoch.
        epochs: Epochs trained.
        lr: Base learning rate.
        cached: Whether the features were extracted once (True) or streamed every epoch.
    """

    layer: str
    dim: int
    top1: float
    train_top1: float
    epochs: int
    lr: float
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_schedule(schedule: str, epochs: int, lr: float) -> None:
    check_choice("schedule", schedule, SCHEDULES)
    check_int_at_least("epochs", epochs, 1)
    check_positive("lr", lr)


def _lr_at(schedule: str, lr: float, step: int, total_steps: int, epoch: int, epochs: int) -> float:
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * step / max(1, total_steps)))
    return lr * 0.1 ** sum(epoch >= math.floor(m * epochs) for m in _STEP_MILESTONES if math.floor(m * epochs) > 0)


Batches = Callable[[int], Iterator[tuple[dict[str, Tensor], Tensor]]]


def _train_heads(
    heads: dict[str, LinearClassifier],
    batches: Batches,
    steps_per_epoch: int,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    schedule: str,
    progress: bool,
) -> dict[str, float]:
    """Trains every head on its layer's features; returns each head's last-epoch training accuracy."""
    params = [p for head in heads.values() for p in head.parameters()]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    total_steps = epochs * steps_per_epoch
    step = 0
    correct = {name: 0 for name in heads}
    seen = 0
    for epoch in range(epochs):
        correct = {name: 0 for name in heads}
        seen = 0
        with progress_bar(steps_per_epoch, f"linear probe epoch {epoch + 1}/{epochs}", enabled=progress) as advance:
            for features, labels in batches(epoch):
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(schedule, lr, step, total_steps, epoch, epochs)
                loss = torch.zeros((), device=labels.device)
                for name, head in heads.items():
                    logits = head(features[name])
                    loss = loss + F.cross_entropy(logits, labels)
                    correct[name] += int((logits.argmax(1) == labels).sum())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seen += len(labels)
                step += 1
                advance(len(labels))
    return {name: correct[name] / max(1, seen) for name in heads}


def _tensor_batches(features: Tensor, labels: Tensor, batch_size: int, seed: int, key: str) -> Batches:
    def batches(epoch: int) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(features.shape[0], generator=generator).to(features.device)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            yield {key: features[chosen]}, labels[chosen]

    return batches


def fit_linear_classifier(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    epochs: int = 10,
    lr: float = 0.1,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    schedule: str = "cosine",
    standardize: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> LinearClassifier:
    """Trains a linear classifier with cross-entropy on fixed features.

    Args:
        features: Training features, shape (N, D).
        labels: Their classes, shape (N,), in [0, num_classes).
        num_classes: C.
        epochs: Passes over the features.
        lr: Base learning rate of SGD.
        batch_size: Mini-batch size.
        momentum: SGD momentum.
        weight_decay: L2 penalty on the linear layer.
        schedule: "cosine" (per step, to 0) or "step" (x0.1 at 60 % and 80 % of the epochs).
        standardize: Standardise with the features' per-dimension mean/std first.
        seed: Seed of the shuffling (weights start at zero).
        progress: Show a progress bar per epoch.

    Returns:
        The trained :class:`LinearClassifier` (on the features' device), in eval mode.
    """
    _check_schedule(schedule, epochs, lr)
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features/labels: expected shapes (N, D) and (N,), got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    features = features.float()
    labels = labels.to(features.device).long()
    mean, std = _moments(features) if standardize else (None, None)
    head = LinearClassifier(features.shape[1], num_classes, mean, std).to(features.device)
    steps = math.ceil(features.shape[0] / batch_size)
    _train_heads({"x": head}, _tensor_batches(features, labels, batch_size, seed, "x"), steps, epochs=epochs, lr=lr,
                 momentum=momentum, weight_decay=weight_decay, schedule=schedule, progress=progress)
    return head.eval()


@torch.no_grad()
def linear_accuracy(classifier: nn.Module, features: Tensor, labels: Tensor, batch_size: int = 4096) -> float:
    """Top-1 accuracy of ``classifier`` on features (N, D) with labels (N,); in [0, 1]."""
    correct = 0
    for start in range(0, features.shape[0], batch_size):
        logits = classifier(features[start : start + batch_size].float())
        correct += int((logits.argmax(1).cpu() == labels[start : start + batch_size].cpu()).sum())
    return correct / max(1, features.shape[0])


def _moments(features: Tensor) -> tuple[Tensor, Tensor]:
    mean = features.mean(0)
    std = features.std(0, unbiased=False).clamp_min(1e-6)
    return mean, std


@torch.no_grad()
def _layer_dims(model: nn.Module, dataset: Dataset, layers: Sequence[str], device: torch.device, max_dim: int) -> dict[str, int]:
    image = dataset[0][0]
    out = model.forward_layers(image.unsqueeze(0).to(device), layers)  # type: ignore[operator]
    return {name: pool_features(out[name], max_dim).shape[1] for name in layers}


@torch.no_grad()
def _extract(
    model: nn.Module, loader: DataLoader, layers: Sequence[str], dims: dict[str, int], size: int,
    device: torch.device, max_dim: int, progress: bool, what: str,
) -> tuple[dict[str, Tensor], Tensor]:
    """Pooled features of ``layers`` for a whole data set, ordered by dataset index."""
    features = {name: torch.empty(size, dims[name], device=device) for name in layers}
    labels = torch.empty(size, dtype=torch.long, device=device)
    with progress_bar(len(loader), f"features {what} ({', '.join(layers)})", enabled=progress) as advance:
        for images, targets, indices in loader:
            indices = torch.as_tensor(indices, device=device)
            out = model.forward_layers(images.to(device), layers)  # type: ignore[operator]
            for name in layers:
                features[name][indices] = pool_features(out[name], max_dim)
            labels[indices] = torch.as_tensor(targets, device=device)
            advance(len(indices))
    return features, labels


def linear_probe(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    layers: Sequence[str] = ("fc",),
    num_classes: int | None = None,
    *,
    epochs: int = 10,
    lr: float = 0.1,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    schedule: str = "cosine",
    max_dim: int = DEFAULT_MAX_DIM,
    cache_bytes: int = 4 << 30,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, LinearProbeResult]:
    """Trains one linear classifier per layer on frozen features; reports test top-1 per layer.

    Args:
        model: A :class:`~and_plugin.backbones.base.Backbone`; frozen and put in eval mode
            for the duration (its training mode is restored afterwards).
        train_set: Items ``(image (C, H, W), target, index)``; normally the training images with
            the test transform.
        test_set: Same item layout, the test transform.
        layers: Layer names, e.g. ``("conv1", "conv2", "conv3", "conv4", "conv5", "fc")``.
        num_classes: C; by default the data sets' ``num_classes`` (or 1 + the largest label).
        epochs: Epochs of every probe (``eval.probe_epochs``).
        lr: Base learning rate (``eval.probe_lr``).
        batch_size: Mini-batch size of probe training and of feature extraction.
        momentum: SGD momentum.
        weight_decay: L2 penalty of the linear layers.
        schedule: "cosine" or "step" (see the module docstring).
        max_dim: Budget of flattened conv features (see :func:`probe_pool_size`).
        cache_bytes: Layers whose train + test features (float32) fit are extracted once;
            larger ones are streamed through the backbone every epoch. 0 streams everything.
        device: Where the backbone and the classifiers run (and cached features live).
        num_workers: DataLoader workers.
        seed: Seed of the shuffling.
        progress: Show rich progress bars.

    Returns:
        ``layer → LinearProbeResult``, in the order of ``layers``.

    Raises:
        ValueError: Unknown layer (naming it and the allowed ones), bad schedule/epochs/lr.
        TypeError: A model without named layers.
    """
    layers = check_probe_layers(model, layers)
    _check_schedule(schedule, epochs, lr)
    device = torch.device(device)
    if num_classes is None:
        num_classes = getattr(test_set, "num_classes", None) or getattr(train_set, "num_classes", None)
        if not num_classes:
            known = [l for l in (targets_of(train_set), targets_of(test_set)) if l is not None]
            if not known:
                raise ValueError("num_classes: not given and the data sets have neither num_classes nor targets")
            num_classes = int(max(int(l.max()) for l in known)) + 1
    was_training = model.training
    model.eval()
    requires_grad = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        dims = _layer_dims(model, test_set, layers, device, max_dim)
        n_train, n_test = len(train_set), len(test_set)  # type: ignore[arg-type]
        per_layer_bytes = {name: 4 * (n_train + n_test) * dims[name] for name in layers}
        groups: list[list[str]] = []
        streamed: list[str] = []
        budget = 0
        for name in layers:
            if per_layer_bytes[name] > cache_bytes:
                streamed.append(name)
            elif groups and budget + per_layer_bytes[name] <= cache_bytes:
                groups[-1].append(name)
                budget += per_layer_bytes[name]
            else:
                groups.append([name])
                budget = per_layer_bytes[name]
        results: dict[str, LinearProbeResult] = {}
        common: dict[str, Any] = {"epochs": epochs, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "schedule": schedule, "progress": progress}

        def loader(dataset: Dataset, shuffle_seed: int | None = None) -> DataLoader:
            generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
            return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle_seed is not None, generator=generator,
                              num_workers=num_workers, pin_memory=device.type == "cuda")

        for group in groups:
            train_x, train_y = _extract(model, loader(train_set), group, dims, n_train, device, max_dim, progress, "train")
            test_x, test_y = _extract(model, loader(test_set), group, dims, n_test, device, max_dim, progress, "test")
            for name in group:
                x = train_x.pop(name)
                mean, std = _moments(x)
                head = LinearClassifier(dims[name], num_classes, mean, std).to(device)
                steps = math.ceil(n_train / batch_size)
                train_acc = _train_heads({name: head}, _tensor_batches(x, train_y, batch_size, seed, name), steps, **common)
                del x
                top1 = linear_accuracy(head.eval(), test_x.pop(name), test_y)
                results[name] = LinearProbeResult(name, dims[name], top1, train_acc[name], epochs, lr, True)

        if streamed:
            results.update(_streamed_probes(model, streamed, dims, num_classes, loader, train_set, test_set,
                                            n_train, device, max_dim, seed, batch_size, **common))
        return {name: results[name] for name in layers}
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
        model.train(was_training)


def _streamed_probes(
    model: nn.Module, layers: list[str], dims: dict[str, int], num_classes: int,
    loader: Callable[..., DataLoader], train_set: Dataset, test_set: Dataset, n_train: int,
    device: torch.device, max_dim: int, seed: int, batch_size: int, **common: Any,
) -> dict[str, LinearProbeResult]:
    """Probes of layers too large to cache: the backbone runs over the training set every epoch."""
    sums = {name: torch.zeros(dims[name], dtype=torch.float64, device=device) for name in layers}
    squares = {name: torch.zeros(dims[name], dtype=torch.float64, device=device) for name in layers}
    with torch.no_grad():
        for images, _targets, _indices in loader(train_set):
            out = model.forward_layers(images.to(device), layers)  # type: ignore[operator]
            for name in layers:
                x = pool_features(out[name], max_dim).double()
                sums[name] += x.sum(0)
                squares[name] += (x * x).sum(0)
    heads = {}
    for name in layers:
        mean = sums[name] / n_train
        std = (squares[name] / n_train - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
        heads[name] = LinearClassifier(dims[name], num_classes, mean.float(), std.float()).to(device)

    def batches(epoch: int) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        for images, targets, _indices in loader(train_set, shuffle_seed=seed * 1_000_003 + epoch):
            with torch.no_grad():
                out = model.forward_layers(images.to(device), layers)  # type: ignore[operator]
                features = {name: pool_features(out[name], max_dim) for name in layers}
            yield features, torch.as_tensor(targets, device=device)

    train_acc = _train_heads(heads, batches, math.ceil(n_train / batch_size), **common)
    correct = {name: 0 for name in layers}
    total = 0
    with torch.no_grad():
        for head in heads.values():
            head.eval()
        for images, targets, _indices in loader(test_set):
            out = model.forward_layers(images.to(device), layers)  # type: ignore[operator]
            targets = torch.as_tensor(targets, device=device)
            for name in layers:
                correct[name] += int((heads[name](pool_features(out[name], max_dim)).argmax(1) == targets).sum())
            total += len(targets)
    return {
        name: LinearProbeResult(name, dims[name], correct[name] / max(1, total), train_acc[name], common["epochs"],
                                common["lr"], False)
        for name in layers
    }
