"""Run configuration: YAML mapped to typed dataclasses, validated on load, overridable by CLI.

Example:
    >>> from and_plugin.config import load_config
    >>> cfg = load_config(None, overrides=["method.neighbours=2", "optim.epochs_per_round=3"])
    >>> cfg.method.neighbours, cfg.optim.epochs_per_round
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._validation import check_finite, check_type, require


class ConfigError(ValueError):
    """A config key has a wrong name, type or value; the message names key, value and what is allowed."""


@dataclass
class ModelConfig:
    """Backbone.

    Attributes:
        backbone: Registered backbone name (see ``and_plugin.backbones``), or "torchvision:<name>".
        embedding_dim: d, the feature size (128 in the paper).
        kwargs: Extra keyword arguments for the backbone factory (e.g. in_channels).
    """

    backbone: str = "small_cnn"
    embedding_dim: int = 128
    kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _require(self.embedding_dim >= 1, "model.embedding_dim", self.embedding_dim, "an integer >= 1")


@dataclass
class DataConfig:
    """Data set and loading.

    Attributes:
        dataset: Registered dataset name (see ``and_plugin.data``).
        root: Data directory; None uses the dataset's default.
        download: Let torchvision download the data where supported.
        transform: Augmentation preset; None = the dataset's default preset.
        subset: Use only this many training images (smoke runs, CPU demos).
        test_subset: Use only this many test images.
        batch_size: Global batch size (128 in the paper, 256 for ImageNet).
        num_workers: DataLoader worker processes per rank.
        gpu_resident: Keep the whole uint8 data set on the GPU and augment there in batches
            (fast path for CIFAR/SVHN/Fashion-MNIST-sized data).
        kwargs: Extra keyword arguments for the dataset builder (e.g. ``synthetic``'s
            image_size, channels, num_classes); ``channels`` here also sets the backbone's input.
    """

    dataset: str = "digits"
    root: str | None = None
    download: bool = False
    transform: str | None = None
    subset: int | None = None
    test_subset: int | None = None
    batch_size: int = 128
    num_workers: int = 0
    gpu_resident: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _require(self.batch_size >= 1, "data.batch_size", self.batch_size, "an integer >= 1")
        _require(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        for key in ("subset", "test_subset"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"data.{key}", value, "null or an integer >= 1")


#: ``method.bank_layout``: where the memory bank's rows live under torch.distributed.
BANK_LAYOUTS = ("replicated", "sharded")


@dataclass
class MethodConfig:
    """AND itself.

    Attributes:
        temperature: τ of the non-parametric softmax (0.1 CIFAR/SVHN, 0.07 ImageNet).
        memory_momentum: η of the memory update, Eq 8 (0.5).
        neighbours: k, neighbours per anchor (1).
        rounds: R, neighbourhood rounds after round 0 (4).
        selection: "curriculum" (S = r/R), "one_off" (all anchors at once; Table 6) or "none"
            (no anchors: instance learning with AND's rounds and schedule restarts, a control).
        round0: "instance" trains round 0 with the instance loss; "random" skips it and discovers
            neighbourhoods from the randomly initialised network (Table 5).
        instance_only: Train round 0 only (the NPID / "Instance" baseline).
        loss_chunk_size: Stream the bank in chunks of this many rows in the loss (null = at once).
        bank_dtype: "float32", "bfloat16" or "float16" storage for the memory bank.
        loss: Registered loss name (``and_plugin.registry.LOSSES``): "neighbourhood" (Eq 7),
            "and_pml", a PML loss ("contrastive", "triplet_margin", "multi_similarity",
            "ntxent", "supcon") or "pml:<ClassName>" for any pytorch-metric-learning loss.
        loss_kwargs: Keyword arguments of the loss (temperature defaults to method.temperature).
        miner: Registered miner name (``MINERS``) feeding a PML loss; null = "and" for PML
            losses, none for "neighbourhood".
        miner_kwargs: Keyword arguments of the miner (e.g. negatives, num_negatives).
        curriculum: Registered curriculum name (``CURRICULA``): "entropy", or "label_filtered"
            (a diagnostic that drops class-inconsistent neighbourhoods using the labels).
        bank_layout: "replicated" (every rank holds the whole N x d bank) or "sharded" (rank r
            holds one block of N/W rows; needs torch.distributed and the "neighbourhood" loss).
        discovery: "exact" (every pair, Eq 1 and 5 as written) or "faiss" (top-k from a faiss
            index and a sampled estimate of the entropy's tail; needs faiss installed).
        discovery_kwargs: Keyword arguments of the discovery (e.g. faiss's index settings).
    """

    temperature: float = 0.1
    memory_momentum: float = 0.5
    neighbours: int = 1
    rounds: int = 4
    selection: str = "curriculum"
    round0: str = "instance"
    instance_only: bool = False
    loss_chunk_size: int | None = None
    bank_dtype: str = "float32"
    loss: str = "neighbourhood"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    miner: str | None = None
    miner_kwargs: dict[str, Any] = field(default_factory=dict)
    curriculum: str = "entropy"
    bank_layout: str = "replicated"
    discovery: str = "exact"
    discovery_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _require(self.temperature > 0, "method.temperature", self.temperature, "a number > 0")
        _require(0 <= self.memory_momentum <= 1, "method.memory_momentum", self.memory_momentum, "a number in [0, 1]")
        _require(self.neighbours >= 1, "method.neighbours", self.neighbours, "an integer >= 1 (and < N)")
        _require(self.rounds >= 1, "method.rounds", self.rounds, "an integer >= 1")
        _require_choice("method.selection", self.selection, ("curriculum", "one_off", "none"))
        _require_choice("method.round0", self.round0, ("instance", "random"))
        _require(not (self.instance_only and self.round0 == "random"), "method.round0", self.round0,
                 "'instance' when method.instance_only=true (the instance baseline is round 0)")
        _require(
            self.loss_chunk_size is None or self.loss_chunk_size >= 1,
            "method.loss_chunk_size", self.loss_chunk_size, "null or an integer >= 1",
        )
        _require_choice("method.bank_dtype", self.bank_dtype, ("float32", "bfloat16", "float16"))
        _require_choice("method.bank_layout", self.bank_layout, BANK_LAYOUTS)
        from .curriculum import DISCOVERIES

        _require_choice("method.discovery", self.discovery, DISCOVERIES)
        from .discovery_faiss import DISCOVERY_KWARGS, import_faiss

        if self.discovery == "faiss":  # before any training, not at the first round's discovery
            try:
                import_faiss()
            except ImportError as error:
                raise ConfigError(str(error)) from None

        unknown = sorted(set(self.discovery_kwargs) - set(DISCOVERY_KWARGS if self.discovery == "faiss" else ()))
        _require(not unknown, "method.discovery_kwargs", self.discovery_kwargs,
                 f"keys of {sorted(DISCOVERY_KWARGS)}" if self.discovery == "faiss"
                 else "empty with method.discovery='exact' (the keys are faiss's)")
        _require(not (self.discovery == "faiss" and self.bank_layout == "sharded"), "method.discovery",
                 self.discovery,
                 "'exact' with method.bank_layout='sharded' (faiss searches an index of the whole bank)")
        from .loss_names import loss_class  # fills LOSSES, MINERS and CURRICULA
        from .registry import CURRICULA, MINERS

        try:
            loss_class(self.loss)
        except KeyError as error:
            raise ConfigError(f"method.loss: {error.args[0]}") from None
        if self.miner is not None:
            _require(self.miner in MINERS, "method.miner", self.miner, f"null or one of {MINERS.names()}")
        _require(self.curriculum in CURRICULA, "method.curriculum", self.curriculum, f"one of {CURRICULA.names()}")
        if self.bank_layout == "sharded":
            _require(self.temperature >= 0.003, "method.temperature", self.temperature,
                     ">= 0.003 with method.bank_layout='sharded' (the shards' sums are combined in float64)")
            _require(self.loss in ("neighbourhood", "and"), "method.loss", self.loss,
                     "'neighbourhood' with method.bank_layout='sharded' (PML losses and miners read the whole bank)")


@dataclass
class OptimConfig:
    """Optimiser and the per-round learning-rate schedule (restarted every round).

    Attributes:
        lr: Base learning rate (0.03).
        lr_reference_batch: If set, lr is scaled by batch_size / lr_reference_batch (linear rule).
        momentum: SGD momentum (0.9).
        nesterov: Nesterov momentum (True).
        weight_decay: 5e-4.
        epochs_per_round: Epochs of every round (200 in the paper).
        round0_epochs: Epochs of round 0; null = epochs_per_round.
        lr_schedule: "step" (lr_milestones, fractions of the round; the paper's schedule),
            "step_epochs" (lr_milestone_epochs, absolute epochs, as the authors' code), "cosine"
            (down to lr_min) or "constant"; see :mod:`and_plugin.schedule`.
        lr_milestones: "step": fractions of a round's epochs at which lr is multiplied by lr_gamma
            (0.4, 0.6, 0.8 = epochs 80, 120, 160 of 200).
        lr_milestone_epochs: "step_epochs": epochs of a round at which lr is multiplied by lr_gamma.
        lr_gamma: 0.1.
        lr_min: "cosine": the lr the curve tends to at a round's end (0).
    """

    lr: float = 0.03
    lr_reference_batch: int | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    epochs_per_round: int = 200
    round0_epochs: int | None = None
    lr_schedule: str = "step"
    lr_milestones: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8])
    lr_milestone_epochs: list[int] = field(default_factory=lambda: [80, 120, 160])
    lr_gamma: float = 0.1
    lr_min: float = 0.0

    def validate(self) -> None:
        _require(self.lr > 0, "optim.lr", self.lr, "a number > 0")
        _require(0 <= self.momentum < 1, "optim.momentum", self.momentum, "a number in [0, 1)")
        _require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.epochs_per_round >= 1, "optim.epochs_per_round", self.epochs_per_round, "an integer >= 1")
        _require(
            self.round0_epochs is None or self.round0_epochs >= 1,
            "optim.round0_epochs", self.round0_epochs,
            "null or an integer >= 1 (to skip round 0 use method.round0=random)",
        )
        _require(
            self.lr_reference_batch is None or self.lr_reference_batch >= 1,
            "optim.lr_reference_batch", self.lr_reference_batch, "null or an integer >= 1",
        )
        _require(
            all(0 < m < 1 for m in self.lr_milestones) and list(self.lr_milestones) == sorted(self.lr_milestones),
            "optim.lr_milestones", self.lr_milestones, "increasing fractions in (0, 1)",
        )
        _require(0 < self.lr_gamma <= 1, "optim.lr_gamma", self.lr_gamma, "a number in (0, 1]")
        _require_choice("optim.lr_schedule", self.lr_schedule, ("step", "step_epochs", "cosine", "constant"))
        _require(
            all(m >= 1 for m in self.lr_milestone_epochs)
            and list(self.lr_milestone_epochs) == sorted(self.lr_milestone_epochs),
            "optim.lr_milestone_epochs", self.lr_milestone_epochs, "increasing integers >= 1",
        )
        _require(0 <= self.lr_min < self.lr, "optim.lr_min", self.lr_min, f"a number in [0, optim.lr = {self.lr})")


@dataclass
class EvalConfig:
    """Evaluation.

    Attributes:
        monitor: Registered evaluator (``and_plugin.registry.EVALUATORS``) run at every round
            end: "knn" (weighted kNN with recomputed features and with the bank).
        knn_k: Neighbours of the weighted kNN (200).
        knn_temperature: σ of the kNN vote weights (0.1 as the reference CIFAR code; the paper says 0.07).
        every_epochs: Also run kNN every this many epochs (0 = only at the end of each round).
        knn_train_subset: The kNN's training side: this many training images, chosen once from
            run.seed (null = all N). Each evaluation recomputes their features on rank 0, which
            at tens of millions of images would take longer than a round.
        bank_knn: Also report kNN with the memory bank as training features (what the reference prints).
        linear_probe: Train linear classifiers on frozen features at the end of the run.
        probe_layers: Backbone layers the linear probes read (e.g. conv1..conv5, fc).
        probe_epochs: Epochs of each linear probe.
        probe_lr: Learning rate of the linear probes.
        collapse_cosine: Warn (a ``CollapseWarning`` and a ``collapse_warning`` entry in the
            metrics) when the memory bank's mean cosine reaches this at an epoch end while the
            loss sits at its uniform-softmax value: the features collapsed (see
            :mod:`and_plugin.collapse`); null turns the check off.
    """

    monitor: str = "knn"
    knn_k: int = 200
    knn_temperature: float = 0.1
    every_epochs: int = 0
    knn_train_subset: int | None = None
    bank_knn: bool = True
    linear_probe: bool = False
    probe_layers: list[str] = field(default_factory=lambda: ["fc"])
    probe_epochs: int = 10
    probe_lr: float = 0.1
    collapse_cosine: float | None = 0.95

    def validate(self) -> None:
        from .evaluation import monitor  # noqa: F401  (fills EVALUATORS)
        from .registry import EVALUATORS

        _require(self.monitor in EVALUATORS, "eval.monitor", self.monitor, f"one of {EVALUATORS.names()}")
        _require(self.knn_k >= 1, "eval.knn_k", self.knn_k, "an integer >= 1")
        _require(self.knn_temperature > 0, "eval.knn_temperature", self.knn_temperature, "a number > 0")
        _require(self.every_epochs >= 0, "eval.every_epochs", self.every_epochs, "an integer >= 0")
        _require(self.knn_train_subset is None or self.knn_train_subset >= 1, "eval.knn_train_subset",
                 self.knn_train_subset, "null or an integer >= 1")
        _require(self.probe_epochs >= 1, "eval.probe_epochs", self.probe_epochs, "an integer >= 1")
        _require(self.probe_lr > 0, "eval.probe_lr", self.probe_lr, "a number > 0")
        _require(self.collapse_cosine is None or 0 < self.collapse_cosine <= 1, "eval.collapse_cosine",
                 self.collapse_cosine, "null or a number in (0, 1]")


@dataclass
class RunConfig:
    """Where and how the run executes.

    Attributes:
        output_dir: Checkpoints, metrics.jsonl, plots and the resolved config go here.
        seed: Seed of initialisation, shuffling and augmentation.
        device: "auto" (cuda if available), "cpu" or "cuda[:i]".
        precision: "fp32" (paper-faithful) or "bf16" (autocast; fast path).
        channels_last: Use the channels-last memory format (fast path on GPUs).
        compile: torch.compile the backbone (fast path).
        deterministic: torch.use_deterministic_algorithms (CPU tests, exact resume checks).
        threads: torch CPU threads; null leaves torch's default (under torchrun: the cores this
            process may use divided by the processes on this machine).
        checkpoint_every: Write a checkpoint every this many epochs (and always at round ends).
        progress: Show rich progress bars.
        resume: ``false`` starts a new run (refused if output_dir already holds one, unless
            ``overwrite``); ``true`` continues from output_dir/checkpoint.pt and is an error
            when there is none; ``"auto"`` continues if a checkpoint is there and starts fresh
            otherwise (what a requeued SLURM job does).
        overwrite: Allow a new run (``resume: false``) to replace the checkpoint and metrics of
            the run already in output_dir.
        sync_batchnorm: Under data-parallel training on GPUs, convert BatchNorm layers to
            SyncBatchNorm so their statistics cover the global batch (as one process with the
            whole batch). Ignored on CPU (SyncBatchNorm needs CUDA): each rank then normalises
            with its own share's statistics.
        imports: Modules imported before anything is built: the ones that register your own
            backbones, data sets and presets (dotted names on ``sys.path`` or ``.py`` paths;
            see :mod:`and_plugin.plugins`). The recipes' ``--import`` appends to it.
    """

    output_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    threads: int | None = None
    checkpoint_every: int = 1
    progress: bool = True
    resume: bool | str = False
    overwrite: bool = False
    sync_batchnorm: bool = False
    imports: list[str] = field(default_factory=list)

    def validate(self) -> None:
        _require(all(isinstance(m, str) and m for m in self.imports), "run.imports", self.imports,
                 "a list of module names or .py paths")
        _require_choice("run.precision", self.precision, ("fp32", "bf16"))
        _require(self.resume in (True, False, "auto"), "run.resume", self.resume, "true, false or 'auto'")
        _require(
            self.device in ("auto", "cpu") or self.device.startswith("cuda"),
            "run.device", self.device, "'auto', 'cpu' or 'cuda[:i]'",
        )
        _require(self.checkpoint_every >= 1, "run.checkpoint_every", self.checkpoint_every, "an integer >= 1")
        _require(self.threads is None or self.threads >= 1, "run.threads", self.threads, "null or an integer >= 1")


@dataclass
class Config:
    """A whole run: ``name`` plus one section per concern.

    Attributes:
        name: Name of the run: the title of its plots and tables and the SLURM job name.
        model: The backbone (:class:`ModelConfig`).
        data: Data set and loading (:class:`DataConfig`).
        method: AND itself (:class:`MethodConfig`).
        optim: Optimiser and learning-rate schedule (:class:`OptimConfig`).
        eval: Evaluation (:class:`EvalConfig`).
        run: Where and how the run executes (:class:`RunConfig`).
    """

    name: str = "and"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> "Config":
        """Checks every value; returns self. Raises :class:`ConfigError`."""
        for name in ("model", "data", "method", "optim", "eval", "run"):
            section = getattr(self, name)
            _require_finite(section, name)
            section.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    require(ok, key, value, allowed, ConfigError)


def _require_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    require(value in allowed, key, value, f"one of {list(allowed)}", ConfigError)


def _require_finite(section: Any, prefix: str) -> None:
    """Every float field of a section is finite (``.inf`` / ``.nan`` are never meaningful here)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, float):
                check_finite(f"{prefix}.{f.name}", item, ConfigError)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix[:-1] or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{key}: unknown key; allowed keys{' in ' + prefix[:-1] if prefix else ''}: {names}")
    values = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            values[name] = check_type(f"{prefix}{name}", value, tp, ConfigError)
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Builds and validates a :class:`Config` from a (possibly partial) nested mapping."""
    return _build(Config, data, "").validate()


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merges ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading ``1e-3`` / ``5E-4`` as floats, as YAML 1.2 does.

    YAML 1.1's float pattern needs a dot in the mantissa, so PyYAML reads ``1e-3`` as the
    string ``'1e-3'``; this loader's resolver accepts the exponent forms too.
    """


YamlLoader.yaml_implicit_resolvers = {key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in list(YamlLoader.yaml_implicit_resolvers):
    YamlLoader.yaml_implicit_resolvers[_first] = [
        (tag, regexp) for tag, regexp in YamlLoader.yaml_implicit_resolvers[_first] if tag != "tag:yaml.org,2002:float"
    ]
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(text: str, where: str, error: type[Exception] = None) -> Any:  # type: ignore[assignment]
    """Parses YAML text with :class:`YamlLoader`; a syntax error names ``where`` and the line.

    Args:
        text: The YAML document.
        where: What the text is, for the message: a file path or ``override 'a.b=...'``.
        error: The exception raised (default :class:`ConfigError`).
    """
    error = error or ConfigError
    try:
        return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise error(f"{where}:{line}: not valid YAML ({problem})") from None


def parse_override(text: str) -> dict[str, Any]:
    """Turns ``"a.b=value"`` into ``{"a": {"b": value}}``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=0.1")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key must be dotted names such as optim.lr, got {key!r}")
    value: Any = read_yaml(raw, f"override {text!r}") if raw.strip() else None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_config(
    source: "str | os.PathLike[str] | dict[str, Any] | None" = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Loads a YAML file (or mapping), applies ``key=value`` overrides, validates.

    Args:
        source: A YAML path, a mapping, or None for the defaults.
        overrides: ``["optim.lr=0.1", "method.neighbours=5", ...]``.
        base: A mapping applied before ``source`` (recipes' defaults).

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: Naming the offending key, its value and what is allowed.
    """
    data: dict[str, Any] = dict(base or {})
    if isinstance(source, dict):
        data = merge(data, source)
    elif source is not None:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {str(path)!r}: cannot be read ({err})") from None
        loaded = read_yaml(text, f"config file {str(path)!r}") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level, got {type(loaded).__name__}")
        data = merge(data, loaded)
    for text in overrides or []:
        data = merge(data, parse_override(text))
    return config_from_dict(data)


def save_config(config: Config, path: "str | os.PathLike[str]") -> None:
    """Writes the resolved config as YAML (next to every run)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
