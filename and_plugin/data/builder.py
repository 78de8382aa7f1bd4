"""How a data set is registered: its :class:`DatasetInfo` and the one shared builder.

A registered data set is a builder ``fn(root, split, transform=None, download=False,
subset=None, **kw) → IndexedDataset`` in :data:`and_plugin.registry.DATASETS`, registered with
a :class:`DatasetInfo` (classes, image size, channels, default preset). Two ways to register:

- :func:`register_dataset` on a *reader* ``read(root, split, download, **kw) → (base, targets,
  classes)``: it makes the builder, which checks ``split`` and ``subset``, checks the labels,
  keeps the class-balanced ``subset`` and adds the index. Every built-in data set is registered
  this way::

      @register_dataset("my_set", info=DatasetInfo(num_classes=4, image_size=32, preset="cifar"))
      def my_set(root, split, download):
          \"\"\"Four classes of my own.\"\"\"
          images, labels = ...  # uint8 (N, H, W, 3), ints
          return ArrayImageDataset(images, labels), labels, ["a", "b", "c", "d"]

- ``@DATASETS.register("my_set", info=DatasetInfo(...))`` on a complete builder of your own
  (it must return an :class:`~and_plugin.data.base.IndexedDataset`).

Example:
    >>> from and_plugin.data import build_dataset, dataset_info
    >>> dataset_info("cifar10").num_classes, dataset_info("cifar10").preset
    (10, 'cifar')
    >>> len(build_dataset("digits", split="test", subset=20))
    20
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from and_plugin.data.base import IndexedDataset
from and_plugin.registry import DATASETS

__all__ = [
    "DatasetInfo",
    "Reader",
    "build_dataset",
    "dataset_info",
    "dataset_keywords",
    "default_root",
    "register_dataset",
    "subset_indices",
]

Transform = Callable[[Any], Any]
#: ``read(root, split, download, **kw) → (base of (image, target) items, targets, class names)``.
Reader = Callable[..., tuple[Dataset, Sequence[int], Sequence[str]]]

DATA_DIR_HINT = "pass --data-dir (the builder's root)"
#: The keywords every builder of :func:`register_dataset` takes.
COMMON_KEYWORDS = ("root", "split", "transform", "download", "subset")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered data set, given when it is registered.

    Attributes:
        name: Registered name (filled in from the registration when left empty).
        num_classes: Number of classes (None when it depends on the files, e.g. ``image_folder``).
        image_size: Side of the network input of the default preset (None: the preset's).
        native_size: Side of the stored images (None when they vary).
        channels: 3 for colour, 1 for grey (sets ``in_channels`` of the backbone).
        preset: Default augmentation preset (a name in :data:`~and_plugin.registry.PRESETS`);
            None: the config must name one (``data.transform``).
        train_size: Number of training images of the full set (None when unknown).
        test_size: Number of test images of the full set (None when unknown).
        downloadable: Whether ``download=True`` can fetch it (through torchvision).
        system_root: Where an operating-system package installs the files, used when ``root``
            is None and ``$AND_DATA_DIR`` is unset (e.g. Debian's Fashion-MNIST).
    """

    name: str = ""
    num_classes: int | None = None
    image_size: int | None = None
    native_size: int | None = None
    channels: int = 3
    preset: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    downloadable: bool = False
    system_root: str | None = None


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` a data set was registered with (name filled in).

    A data set registered without ``info`` gets the defaults (3 channels, no default preset).

    Raises:
        ValueError: Naming the unknown data set and listing the known ones.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset_info: unknown dataset {name!r}; known: {', '.join(DATASETS.names())}")
    info = DATASETS.info(name)
    if info is None:
        return DatasetInfo(name)
    if not isinstance(info, DatasetInfo):
        raise ValueError(f"dataset_info: {name!r} was registered with info={info!r}; expected a DatasetInfo")
    return info if info.name == name else replace(info, name=name)


def dataset_keywords(name: str) -> list[str] | None:
    """The keywords data set ``name`` takes besides :data:`COMMON_KEYWORDS`; None when it takes any.

    Raises:
        KeyError: Naming the unknown data set and listing the known ones.
    """
    builder = DATASETS.get(name)
    if hasattr(builder, "reader_keywords"):  # made by register_dataset
        return None if builder.reader_keywords is None else list(builder.reader_keywords)
    parameters = inspect.signature(builder).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters
            if p.name not in COMMON_KEYWORDS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def build_dataset(name: str, root: str | None = None, split: str = "train", **kwargs: Any) -> IndexedDataset:
    """Builds a registered dataset by name: ``DATASETS.build(name, root=root, split=split, ...)``."""
    return DATASETS.build(name, root=root, split=split, **kwargs)


def default_root(name: str) -> str:
    """The directory read when ``root`` is None: ``$AND_DATA_DIR/<name>``, else the data set's
    ``system_root`` if it has one, else ``~/.cache/and_plugin/data/<name>``.
    """
    system_root = DATASETS.info(name).system_root if name in DATASETS and DATASETS.info(name) else None
    if system_root is not None and "AND_DATA_DIR" not in os.environ:
        return system_root
    base = os.environ.get("AND_DATA_DIR", os.path.join("~", ".cache", "and_plugin", "data"))
    return os.path.join(os.path.expanduser(base), name)


def subset_indices(targets: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """Deterministic class-balanced subset: the first items of every class, taken round-robin.

    The i-th item of each class (in dataset order) is taken before the (i+1)-th item of any class;
    the result is sorted, so the subset keeps the dataset's order.

    Args:
        targets: Class of every item, shape (N,).
        n: Number of items to keep (all of them when ``n >= N``).

    Returns:
        int64 indices into the dataset, shape (min(n, N),), ascending.

    Example:
        >>> subset_indices([0, 0, 0, 1, 1, 2], 4).tolist()
        [0, 1, 3, 5]
    """
    targets = np.asarray(targets, dtype=np.int64)
    if n >= len(targets):
        return np.arange(len(targets), dtype=np.int64)
    rank = np.empty(len(targets), dtype=np.int64)
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        rank[members] = np.arange(len(members))
    order = np.lexsort((np.arange(len(targets)), rank))  # by rank within class, then position
    return np.sort(order[:n])


def resolve_root(name: str, root: str | os.PathLike[str] | None) -> str:
    """``root`` with ``~`` expanded, or :func:`default_root` when it is None."""
    return os.path.expanduser(os.fspath(root)) if root is not None else default_root(name)


def not_found(name: str, expected: str, download: str | None) -> FileNotFoundError:
    """The missing-files error: what was expected where, and how to get it."""
    how = f"{DATA_DIR_HINT} or download=True" if download is None else f"{DATA_DIR_HINT}; {download}"
    return FileNotFoundError(f"{name}: expected {expected}; {how}")


def _check_split(name: str, split: str, allowed: Sequence[str] | None, aliases: dict[str, str] | None) -> str:
    resolved = (aliases or {}).get(split, split)
    if allowed is None:
        if not isinstance(resolved, str) or not resolved:
            raise ValueError(f"{name}: split must be a non-empty string, got {split!r}")
        return resolved
    if resolved not in allowed:
        extra = f" (aliases: {aliases})" if aliases else ""
        raise ValueError(f"{name}: unknown split {split!r}; allowed: {', '.join(allowed)}{extra}")
    return resolved


def _check_subset(name: str, subset: int | None) -> None:
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"{name}: subset must be a positive int or None, got {subset!r}")


def finish(
    name: str,
    base: Dataset,
    targets: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    transform: Transform | None = None,
    subset: int | None = None,
) -> IndexedDataset:
    """Checks the labels, keeps the class-balanced ``subset`` and wraps ``base`` in an ``IndexedDataset``.

    Args:
        name: Data set name, for messages.
        base: ``(image, target)`` items; its ``select(indices)`` is used for the subset when it
            has one (the stores of :mod:`and_plugin.data.base`), else a ``torch`` ``Subset``.
        targets: Class of each item, length ``len(base)``.
        classes: Class names, index = class id.
        transform: Applied to each image.
        subset: Keep this many items (class-balanced, deterministic), or all if None.
    """
    _check_subset(name, subset)
    targets_np = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(targets_np) == 0:
        raise ValueError(f"{name}: found no images")
    if targets_np.min() < 0 or targets_np.max() >= len(classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {len(classes) - 1}], found [{targets_np.min()}, {targets_np.max()}]"
        )
    if subset is not None:
        keep = subset_indices(targets_np, subset)
        base = base.select(keep) if hasattr(base, "select") else Subset(base, keep.tolist())
        targets_np = targets_np[keep]
    return IndexedDataset(base, targets_np.tolist(), classes, transform)


_COMMON_ARGS = """\
    root: Data directory (None: :func:`~and_plugin.data.default_root` of the data set).
    split: {splits}.
    transform: Applied to each PIL image.
    download: {download}
    subset: Keep this many items (class-balanced, deterministic), or all of them (None)."""


def register_dataset(
    name: str,
    *,
    info: DatasetInfo | None = None,
    splits: Sequence[str] | None = ("train", "test"),
    aliases: dict[str, str] | None = None,
    force: bool = False,
) -> Callable[[Reader], Callable[..., IndexedDataset]]:
    """Decorator: registers the builder made from a reader in :data:`~and_plugin.registry.DATASETS`.

    The builder is ``fn(root=None, split="train", transform=None, download=False, subset=None,
    **kw)``; it checks ``split`` (after ``aliases``) and ``subset``, calls
    ``read(root, split, download, **kw)`` with ``root`` as given (``~`` expanded), checks the
    labels and returns ``IndexedDataset(base, targets, classes, transform)`` of the subset.
    Its docstring is the reader's description followed by the common arguments and the
    reader's own ``Args:`` (its extra keywords, passed through ``**kw``).

    Args:
        name: The registered name.
        info: The data set's facts (its ``name`` is filled in); None: the defaults.
        splits: The allowed splits (None: any non-empty name, for the reader to interpret).
        aliases: Other split names, e.g. ``{"test": "val"}``.
        force: Replace an existing data set of the same name.

    Returns:
        The decorator; it returns the builder.
    """

    def decorator(read: Reader) -> Callable[..., IndexedDataset]:
        def build(
            root: str | os.PathLike[str] | None = None,
            split: str = "train",
            transform: Transform | None = None,
            download: bool = False,
            subset: int | None = None,
            **kwargs: Any,
        ) -> IndexedDataset:
            _check_subset(name, subset)
            if own_keywords is not None:
                for key in kwargs:
                    if key not in own_keywords:
                        allowed = ", ".join(COMMON_KEYWORDS + tuple(own_keywords))
                        raise ValueError(f"{name}: unknown keyword {key!r}; {name} takes {allowed}")
            resolved = _check_split(name, split, splits, aliases)
            path = os.path.expanduser(os.fspath(root)) if root is not None else None
            base, targets, classes = read(path, resolved, download, **kwargs)
            return finish(name, base, targets, classes, transform, subset)

        build.__name__ = build.__qualname__ = read.__name__
        build.__module__ = read.__module__
        build.__doc__ = _builder_doc(read, info, splits, aliases)
        # The signature shows **kwargs only when the reader takes keywords of its own (listed in the docstring).
        own = [n for n in inspect.signature(read).parameters if n not in ("root", "split", "download")]
        takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(read).parameters.values())
        own_keywords = None if takes_any else tuple(
            n for n, p in inspect.signature(read).parameters.items()
            if n not in ("root", "split", "download") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        build.reader_keywords = own_keywords  # type: ignore[attr-defined]
        if not own:
            common = [p for n, p in inspect.signature(build).parameters.items() if n != "kwargs"]
            build.__signature__ = inspect.Signature(common, return_annotation="IndexedDataset")  # type: ignore[attr-defined]
        stored = info if info is None or info.name else replace(info, name=name)
        DATASETS.register(name, info=stored, force=force)(build)
        return build

    return decorator


def _builder_doc(
    read: Reader, info: DatasetInfo | None, splits: Sequence[str] | None, aliases: dict[str, str] | None
) -> str:
    """The reader's description, then the common arguments, then the reader's own ``Args:`` lines."""
    doc = inspect.cleandoc(read.__doc__ or "")
    description, _, args_part = doc.partition("\nArgs:\n")
    own_args = []
    for line in args_part.splitlines():
        if line and not line.startswith(" "):
            break  # the next section
        own_args.append(line)
    split_text = " or ".join(f'"{s}"' for s in splits) if splits is not None else "The split to read"
    if aliases:
        split_text += " (also " + ", ".join(f'"{a}" for "{s}"' for a, s in aliases.items()) + ")"
    download = (
        "Fetch the files with torchvision when they are missing."
        if info is not None and info.downloadable
        else "Not supported (ignored): the files must be there."
    )
    args = _COMMON_ARGS.format(splits=split_text, download=download)
    own = "\n".join(own_args).rstrip()
    return (
        f"{description.rstrip()}\n\nArgs:\n{args}\n" + (own + "\n" if own else "")
        + "\nReturns:\n    :class:`~and_plugin.data.base.IndexedDataset` of ``(PIL image, target, index)``.\n"
    )
