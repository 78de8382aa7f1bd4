"""The run's checkpoint file and the random-number state an exact resume needs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import is_main_process

CHECKPOINT_NAME = "checkpoint.pt"


class RunCheckpoint:
    """``output_dir/checkpoint.pt``: written atomically by rank 0, read by every rank on resume.

    Args:
        output_dir: The run directory.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / CHECKPOINT_NAME

    def save(self, state: dict[str, Any]) -> None:
        """Writes ``state`` (rank 0 only; every rank holds the same state)."""
        if is_main_process():
            save_checkpoint(state, self.path)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is no checkpoint yet.

        Loaded on the CPU: RNG states must stay CPU ByteTensors; the loop moves the rest.
        """
        if not self.path.exists():
            return None
        return load_checkpoint(self.path, map_location="cpu")


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA) and python random states."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])


__all__ = ["CHECKPOINT_NAME", "RunCheckpoint", "rng_state", "set_rng_state"]
