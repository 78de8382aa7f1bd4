"""Atomic checkpoint files: written to a temporary file, flushed, then renamed into place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a checkpoint of this library."""


FORMAT = "and_plugin/checkpoint/v1"


def save_checkpoint(state: dict[str, Any], path: "str | os.PathLike[str]") -> None:
    """Writes ``state`` to ``path`` atomically: a crash leaves the previous file intact.

    Args:
        state: Any torch-serialisable mapping.
        path: Destination file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"format": FORMAT, **state}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: "str | os.PathLike[str]", map_location: Any = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: If the file is missing, truncated/corrupted or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises several types for damaged files
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupted ({type(error).__name__}: {error}); "
            "delete it to start over, or restore a copy"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an and_plugin checkpoint (format {FORMAT})")
    return state
