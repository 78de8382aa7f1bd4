"""Atomic checkpoint files: written to a temporary file, flushed, then renamed into place.

The temporary file is named ``.<name>.<host>.<pid>.<random>.tmp`` beside the checkpoint. A
writer killed mid-write (``kill -9``, out of memory, a hard preemption) leaves that file
behind; :func:`remove_stale_temporaries` (called when a run starts) deletes the ones whose
writer is gone: same host and a pid that no longer runs. Files of another host are left alone
unless they are older than ``max_age_s`` (their writer cannot be checked from here), and the
checkpoint itself is never touched.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ._version import __version__


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a checkpoint of this library."""


FORMAT = "and_plugin/checkpoint/v1"
#: A temporary file of another host older than this is taken as abandoned (seconds).
FOREIGN_TEMP_MAX_AGE_S = 24 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _temp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def save_checkpoint(state: dict[str, Any], path: "str | os.PathLike[str]") -> None:
    """Writes ``state`` to ``path`` atomically: a crash leaves the previous file intact.

    The file also records ``"format"`` and ``"and_plugin_version"`` (the version that wrote it).

    Args:
        state: Any torch-serialisable mapping.
        path: Destination file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{_host()}.{os.getpid()}."
    handle, temporary = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"format": FORMAT, "and_plugin_version": __version__, **state}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(
    path: "str | os.PathLike[str]", max_age_s: float = FOREIGN_TEMP_MAX_AGE_S
) -> list[Path]:
    """Deletes the temporary files that killed writers of ``path`` left behind.

    Only files named as :func:`save_checkpoint` names them are considered; one is removed when
    it was written on this host by a process that no longer exists, or on another host more
    than ``max_age_s`` ago.

    Args:
        path: The checkpoint file (it need not exist).
        max_age_s: Age after which another host's temporary file is removed.

    Returns:
        The removed files.
    """
    path = Path(path)
    pattern = _temp_pattern(path.name)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    host, now = _host(), time.time()
    for candidate in path.parent.iterdir():
        match = pattern.match(candidate.name)
        if match is None or candidate == path:
            continue
        pid = int(match["pid"])
        if match["host"] == host:
            stale = pid != os.getpid() and not _pid_alive(pid)
        else:
            try:
                stale = now - candidate.stat().st_mtime > max_age_s
            except FileNotFoundError:
                continue
        if stale:
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


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
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupted ({reason}); "
            "delete it to start over, or restore a copy"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an and_plugin checkpoint (format {FORMAT})")
    return state
