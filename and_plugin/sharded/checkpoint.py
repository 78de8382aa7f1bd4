"""The run's checkpoint when the memory bank is sharded: per-rank rows through torch.distributed.checkpoint.

With ``method.bank_layout="sharded"`` no rank holds the whole bank, so no rank can write it into
one file. :class:`ShardedRunCheckpoint` splits the checkpoint in two:

- ``checkpoint.pt``: what every rank holds alike (model, optimizer, position, RNG states, ...),
  written by rank 0 with the atomic :func:`~and_plugin.checkpoint.save_checkpoint`, plus a
  ``"sharded"`` entry naming the shard directory, N, the number of ranks that wrote it and each
  shard's dtype and global shape;
- ``shards-<n>/``: the row-sharded tensors (memory bank, curriculum state, ...) written by
  torch.distributed.checkpoint (DCP) as DTensors placed ``Shard(0)``: every rank writes its own
  rows to its own file ``__<rank>_0.distcp``, rank 0 adds DCP's ``.metadata``.

Atomicity: the shards go to a fresh ``shards-<n>.tmp``, which rank 0 renames to ``shards-<n>``
once every rank has written; only then is ``checkpoint.pt`` replaced to name it, and only after
that are older ``shards-*`` removed. A process killed at any point leaves the previous
``checkpoint.pt`` and the directory it names intact. Leftover ``*.tmp`` and unnamed
``shards-*`` directories are removed at the next save (or by :meth:`ShardedRunCheckpoint.remove_stale`).

On resume each rank reads exactly the rows of its new :class:`RowPartition`; DCP re-shards, so a
run saved by 4 ranks continues on 2, 8 or 1.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..distributed import broadcast_object, get_rank, get_world_size
from ..run_checkpoint import CHECKPOINT_NAME
from ..rundir import RunDirError
from .partition import RowPartition

#: The key of ``checkpoint.pt`` that describes the shards.
LAYOUT_KEY = "sharded"
LAYOUT_FORMAT = "and_plugin/sharded-checkpoint/v1"
SHARDS_PREFIX = "shards-"
_SHARDS_DIR = re.compile(rf"^{SHARDS_PREFIX}(?P<n>\d+)(?P<tmp>\.tmp)?$")
#: DCP's metadata file, written last by the coordinating rank.
_DCP_METADATA = ".metadata"


class ShardedRunCheckpoint:
    """``output_dir/checkpoint.pt`` plus ``output_dir/shards-<n>/``: a checkpoint no rank holds whole.

    Every rank calls :meth:`save` and :meth:`load` (both are collective under torch.distributed;
    without a process group they work in the one process).

    Args:
        output_dir: The run directory.

    Example:
        >>> import tempfile, torch
        >>> run = ShardedRunCheckpoint(tempfile.mkdtemp())
        >>> part = RowPartition(size=5)  # one process: all 5 rows
        >>> _ = run.save({"epoch": 3}, {"memory_bank": torch.eye(5, 2)}, part)
        >>> state, shards = run.load(part)
        >>> state["epoch"], shards["memory_bank"].shape
        (3, torch.Size([5, 2]))
    """

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / CHECKPOINT_NAME
        self._mesh: Any = None  # the 1-D device mesh of the process group, made on first use

    def save(self, state: dict[str, Any], shards: dict[str, Tensor], partition: RowPartition) -> Path:
        """Writes a checkpoint: ``state`` by rank 0, each rank's rows of every shard by that rank.

        Args:
            state: What every rank holds alike (torch-serialisable); rank 0's copy is written.
            shards: Name → this rank's rows (n_r, ...) of a global (N, ...) tensor, n_r =
                ``partition.count``; the same names, trailing shapes and dtypes on every rank.
            partition: This process's rows (``RowPartition.current(N)``).

        Returns:
            The shard directory the new ``checkpoint.pt`` names.

        Raises:
            ValueError: On every rank, naming the rank and the argument, when the arguments do
                not fit the partition or differ between ranks; nothing is written then.
        """
        error = _partition_error(partition) or _check_save_arguments(state, shards, partition)
        specs = _all_gather((error, _shard_specs(shards) if error is None else None, getattr(partition, "size", None)))
        _raise_first_error([e for e, _, _ in specs])
        reference = specs[0][1]
        for rank, (_, spec, size) in enumerate(specs):
            if size != specs[0][2]:
                raise ValueError(f"partition.size must be the same N on every rank, got {specs[0][2]} on rank 0 "
                                 f"and {size} on rank {rank}")
            if spec != reference:
                raise ValueError(
                    f"shards must have the same names, dtypes and trailing shapes on every rank, got "
                    f"{_describe(reference)} on rank 0 and {_describe(spec)} on rank {rank}")
        main = get_rank() == 0
        outcome: Any = None
        failure: Exception | None = None  # rank 0's own error, raised there as it is
        if main:
            try:
                number = 1 + max(self._numbers(), default=0)  # before the clean-up: never reuse a name
                self._remove_shard_dirs(keep=None, temporaries_only=True)  # the rest once checkpoint.pt is replaced
                temporary = self.output_dir / f"{SHARDS_PREFIX}{number}.tmp"
                temporary.mkdir(parents=True)
                outcome = number
            except Exception as err:  # noqa: BLE001 - every rank must hear of it, or the others wait forever
                failure, outcome = err, f"{type(err).__name__}: {err}"
        outcome = broadcast_object(outcome)
        if failure is not None:
            raise failure
        if isinstance(outcome, str):
            raise CheckpointError(f"sharded checkpoint in {str(self.output_dir)!r} cannot be written: {outcome}")
        number = outcome
        name = f"{SHARDS_PREFIX}{number}"
        temporary = self.output_dir / f"{name}.tmp"
        state_dict = {key: self._distribute(local, partition) for key, local in shards.items()}
        try:
            with _single_process_quietly():
                dcp.save(state_dict, storage_writer=FileSystemWriter(temporary, sync_files=True, overwrite=False),
                         no_dist=not _has_process_group())
        except CheckpointException as err:
            raise CheckpointError(f"sharded checkpoint in {str(self.output_dir)!r} cannot be written "
                                  f"({_first_failure(err)}); the previous checkpoint is kept") from None
        _barrier()
        if main:
            try:
                os.replace(temporary, self.output_dir / name)
                _fsync_directory(self.output_dir)
                layout = {
                    "format": LAYOUT_FORMAT, "directory": name, "size": partition.size, "world": partition.world,
                    "shards": {key: {"dtype": str(dtype).removeprefix("torch."), "shape": [partition.size, *tail]}
                               for key, (dtype, tail) in reference.items()},
                }
                save_checkpoint({**state, LAYOUT_KEY: layout}, self.path)
                self._remove_shard_dirs(keep=name)
                outcome = None
            except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
                failure, outcome = err, f"{type(err).__name__}: {err}"
        outcome = broadcast_object(outcome)
        if failure is not None:
            raise failure
        if outcome is not None:
            raise CheckpointError(f"sharded checkpoint in {str(self.output_dir)!r} cannot be written: {outcome}; "
                                  "the previous checkpoint is kept")
        return self.output_dir / name

    def load(self, partition: RowPartition) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
        """The saved state and this rank's rows of every shard, or None when there is no checkpoint.

        Each rank reads only the saved chunks that overlap its rows of ``partition``, which may
        split the rows over another number of ranks than the checkpoint's writers.

        Args:
            partition: This process's rows (``RowPartition.current(N)``).

        Returns:
            ``(state, shards)``: ``state`` as saved (``"format"`` and ``"and_plugin_version"``
            added, as in :func:`~and_plugin.checkpoint.load_checkpoint`), on the CPU;
            ``shards`` maps each name to this rank's rows (``partition.count``, ...) in the
            saved dtype, on the CPU (on the current CUDA device under NCCL).

        Raises:
            RunDirError: The checkpoint holds another number of rows N than ``partition.size``.
            CheckpointError: ``checkpoint.pt`` is damaged, holds no sharded layout (a
                replicated run's checkpoint) or its shard directory is incomplete.
        """
        error = _partition_error(partition)
        state: dict[str, Any] | None = None
        layout: dict[str, Any] | None = None
        if error is not None:
            error = f"ValueError\0{error}"
        elif self.path.exists():
            try:
                state = load_checkpoint(self.path, map_location="cpu")
                layout = self._layout(state, partition)
            except (CheckpointError, RunDirError) as err:
                error = f"{type(err).__name__}\0{err}"
        seen = _all_gather((error, None if layout is None else layout["directory"], state is not None))
        for message in (e for e, _, _ in seen if e is not None):
            kind, text = message.split("\0", 1)
            raise {"RunDirError": RunDirError, "ValueError": ValueError}.get(kind, CheckpointError)(text)
        if len({(directory, present) for _, directory, present in seen}) > 1:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} changed while the ranks read it (another process is saving into "
                f"{str(self.output_dir)!r}?); the ranks saw {[d if p else None for _, d, p in seen]}; load again")
        if state is None:
            return None
        assert layout is not None
        directory = self.output_dir / layout["directory"]
        device = _mesh_device() if _has_process_group() else "cpu"
        state_dict = {
            key: self._distribute(torch.empty((partition.count, *spec["shape"][1:]),
                                              dtype=getattr(torch, spec["dtype"]), device=device), partition)
            for key, spec in layout["shards"].items()
        }
        try:
            with _single_process_quietly():
                dcp.load(state_dict, storage_reader=FileSystemReader(directory), no_dist=not _has_process_group())
        except CheckpointException as err:
            raise CheckpointError(
                f"sharded checkpoint {str(directory)!r} (named by {str(self.path)!r}) is incomplete or corrupted "
                f"({_first_failure(err)}); restore a copy, or delete {CHECKPOINT_NAME} and the shards-* directories to start over"
            ) from None
        shards = {key: _local(value) for key, value in state_dict.items()}
        return state, shards

    def remove_stale(self) -> list[Path]:
        """Removes shard directories no checkpoint names: ``shards-*.tmp`` of killed saves, and
        ``shards-<n>`` renamed by a save killed before it replaced ``checkpoint.pt``.

        Call it on rank 0 when a run starts (``save`` calls it too); never while another
        process saves into the same directory.

        Returns:
            The removed directories.
        """
        keep = None
        if self.path.is_file():
            try:
                layout = load_checkpoint(self.path).get(LAYOUT_KEY)
                keep = layout["directory"] if isinstance(layout, dict) else None
            except CheckpointError:
                return []  # a damaged checkpoint.pt: leave every directory for the user to restore
        return self._remove_shard_dirs(keep)

    def _numbers(self) -> list[int]:
        if not self.output_dir.is_dir():
            return []
        return [int(m["n"]) for m in map(_SHARDS_DIR.match, os.listdir(self.output_dir)) if m]

    def _remove_shard_dirs(self, keep: str | None, temporaries_only: bool = False) -> list[Path]:
        removed: list[Path] = []
        if not self.output_dir.is_dir():
            return removed
        for entry in sorted(os.listdir(self.output_dir)):
            path, match = self.output_dir / entry, _SHARDS_DIR.match(entry)
            if match and entry != keep and (match["tmp"] or not temporaries_only) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def _layout(self, state: dict[str, Any], partition: RowPartition) -> dict[str, Any]:
        """Pops and checks the ``"sharded"`` entry of a loaded ``checkpoint.pt``."""
        layout = state.pop(LAYOUT_KEY, None)
        if not isinstance(layout, dict) or layout.get("format") != LAYOUT_FORMAT:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} holds no sharded memory bank (it was written with "
                "method.bank_layout=replicated); resume it with method.bank_layout=replicated")
        if layout["size"] != partition.size:
            raise RunDirError(
                f"checkpoint {str(self.path)!r} holds a memory bank of N={layout['size']} rows, this run has "
                f"N={partition.size}; resume against another N or data is refused. Resume with the data it was "
                "trained on, or start a new run in another --output-dir")
        if not (self.output_dir / layout["directory"] / _DCP_METADATA).is_file():
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} names the shard directory {layout['directory']!r}, which is missing "
                f"or incomplete in {str(self.output_dir)!r}; restore a copy, or delete {CHECKPOINT_NAME} and the "
                "shards-* directories to start over")
        return layout

    def _distribute(self, local: Tensor, partition: RowPartition) -> Tensor:
        """This rank's rows as a DTensor ``Shard(0)`` of the global (N, ...) tensor (the tensor
        itself without a process group, where it is the whole)."""
        if not _has_process_group():
            return local.contiguous()
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Shard

        device = _mesh_device()
        if self._mesh is None or self._mesh.device_type != device or self._mesh.size() != partition.world:
            self._mesh = init_device_mesh(device, (partition.world,))
        mesh = self._mesh
        shape = (partition.size, *local.shape[1:])
        return DTensor.from_local(local.contiguous(), mesh, [Shard(0)], run_check=False, shape=shape,
                                  stride=_contiguous_stride(shape))


def _has_process_group() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextmanager
def _single_process_quietly() -> Iterator[None]:
    """DCP warns that it assumes a single process when there is no process group: here that is
    the intent, not a mistake to report."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*single process", category=UserWarning)
        yield


def _mesh_device() -> str:
    """The device type of the process group's tensors: "cuda" under NCCL, "cpu" under gloo."""
    return "cuda" if "nccl" in str(dist.get_backend()) else "cpu"


def _local(value: Tensor) -> Tensor:
    to_local = getattr(value, "to_local", None)
    return to_local() if to_local is not None else value


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, step = [], 1
    for size in reversed(shape):
        stride.append(step)
        step *= size
    return tuple(reversed(stride))


def _partition_error(partition: Any) -> str | None:
    """Why ``partition`` is not this process's rows, or None."""
    world, rank = get_world_size(), get_rank()
    if not isinstance(partition, RowPartition):
        return f"partition must be a RowPartition, got {type(partition).__name__} (rank {rank})"
    if (partition.world, partition.rank) != (world, rank):
        return (f"partition must be this process's rows (world={world}, rank={rank}: RowPartition.current(N)), "
                f"got world={partition.world}, rank={partition.rank}")
    return None


def _first_failure(error: CheckpointException) -> str:
    """The first rank's exception of a DCP failure, on one line."""
    failure = next(iter(error.failures.values()), error)
    text = str(failure).strip().splitlines()
    return f"{type(failure).__name__}: {text[0] if text else ''}"


def _check_save_arguments(state: Any, shards: Any, partition: RowPartition) -> str | None:
    """The first problem with this rank's arguments, as a message, or None."""
    rank = partition.rank
    if not isinstance(state, dict):
        return f"state must be a dict, got {type(state).__name__} (rank {rank})"
    if LAYOUT_KEY in state:
        return f"state must not hold the key {LAYOUT_KEY!r} (it describes the shards), got {sorted(state)} (rank {rank})"
    if not isinstance(shards, dict) or not shards:
        return f"shards must be a non-empty dict of name -> tensor, got {shards!r:.80} (rank {rank})"
    for key, local in shards.items():
        if not isinstance(key, str) or not key:
            return f"shards keys must be non-empty names, got {key!r} (rank {rank})"
        if not isinstance(local, Tensor) or local.dim() < 1:
            got = f"shape {tuple(local.shape)}" if isinstance(local, Tensor) else type(local).__name__
            return f"shards[{key!r}] must be a tensor of rows (n_r, ...), got {got} (rank {rank})"
        if local.shape[0] != partition.count:
            return (f"shards[{key!r}] must hold this rank's {partition.count} rows [{partition.start}, "
                    f"{partition.stop}) of N={partition.size}, got shape {tuple(local.shape)} (rank {rank})")
    return None


def _shard_specs(shards: dict[str, Tensor]) -> dict[str, tuple[torch.dtype, list[int]]]:
    return {key: (local.dtype, list(local.shape[1:])) for key, local in shards.items()}


def _describe(spec: dict[str, tuple[torch.dtype, list[int]]]) -> str:
    return "{" + ", ".join(f"{k}: {str(d).removeprefix('torch.')} (n, {', '.join(map(str, t))})".replace(", )", ")")
                           for k, (d, t) in spec.items()) + "}"


def _raise_first_error(errors: list[str | None]) -> None:
    for message in errors:
        if message is not None:
            raise ValueError(message)


def _all_gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def _fsync_directory(path: Path) -> None:
    """Makes a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


__all__ = ["LAYOUT_KEY", "SHARDS_PREFIX", "ShardedRunCheckpoint"]
