"""A tiny name → builder registry, used for backbones, datasets, presets, losses, miners and curricula.

Modelled on MMEngine's ``Registry`` but much smaller: register by decorator, build by name,
list the names, and fail with a message that lists the known names. An entry may carry an
``info`` object: the static facts the rest of the code needs about it without building it
(a dataset's :class:`~and_plugin.data.DatasetInfo`, a preset's
:class:`~and_plugin.data.PresetInfo`).

Example:
    >>> from and_plugin.registry import Registry
    >>> HEADS = Registry("head")
    >>> @HEADS.register("double")
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> HEADS.build("double", x=3)
    6
    >>> "double" in HEADS
    True
    >>> @HEADS.register("triple", info={"factor": 3})
    ... def triple(x: int) -> int:
    ...     return 3 * x
    >>> HEADS.info("triple")
    {'factor': 3}
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
    """Maps names to classes or factory functions.

    Args:
        kind: What the registry holds ("backbone", "dataset", ...); used in error messages.
        plural: The plural of ``kind`` in messages; ``kind + "s"`` by default.
    """

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural if plural is not None else kind + "s"
        self._entries: dict[str, Callable[..., Any]] = {}
        self._info: dict[str, Any] = {}

    def register(self, name: str | None = None, *, force: bool = False, info: Any = None) -> Callable[[T], T]:
        """Decorator that registers a class or function under ``name``.

        Args:
            name: The registered name; defaults to the object's ``__name__``.
            force: Replace an existing entry of the same name instead of raising.
            info: Static facts about the entry, returned by :meth:`info` (None: none).

        Returns:
            The decorator, which returns the object unchanged.

        Raises:
            ValueError: If ``name`` is already registered and ``force`` is False.
        """

        def decorator(obj: T) -> T:
            key = name if name is not None else obj.__name__
            if not isinstance(key, str) or not key:
                raise ValueError(f"{self.kind} name must be a non-empty string, got {key!r}")
            if key in self._entries and not force:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered (to {self._entries[key]!r}); "
                    "pass force=True to replace it"
                )
            self._entries[key] = obj
            self._info[key] = info
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Returns the object registered under ``name``.

        Raises:
            KeyError: Naming the unknown name and listing every known one.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.plural}: {known}") from None

    def info(self, name: str) -> Any:
        """The ``info`` registered with ``name`` (None when it was registered without).

        Raises:
            KeyError: Naming the unknown name and listing every known one.
        """
        self.get(name)
        return self._info[name]

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Calls the object registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


BACKBONES = Registry("backbone")
DATASETS = Registry("dataset")
#: Augmentation presets: ``(train, size, normalize) → transform`` with a ``PresetInfo``.
PRESETS = Registry("preset")
LOSSES = Registry("loss", "losses")
MINERS = Registry("miner")
CURRICULA = Registry("curriculum", "curricula")
EVALUATORS = Registry("evaluator")
