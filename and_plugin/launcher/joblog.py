"""Progress in the job's stdout, the log the submit message tells the user to ``tail -f``.

A job runs without a terminal (``run.progress`` bars are off or unreadable in a file), so rank 0
prints one line where it starts (fresh, or resumed from a checkpoint) and one per epoch and per
round, flushed at once::

    resumed from round 0, epoch 2/3 (checkpoint.pt in /runs/x; SLURM restart 1)
    round 0 epoch 3/3: loss 6.4121, lr 0.03, 812 img/s, 4.1 s
    round 0 done: kNN top-1 0.4120 (bank 0.4010)

The same numbers are in ``<output_dir>/metrics.jsonl``, one JSON line per epoch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EpochLog", "start_line"]


def _say(text: str) -> None:
    print(text, flush=True)  # stdout goes to a file: flush, or it shows up only when the job ends


def start_line(plan: list[tuple[int, int]], position: tuple[int, int] | list[int] | None, where: str,
               restarts: int) -> str:
    """The first line of an attempt: where it starts in the round plan.

    Args:
        plan: ``[(round, epochs), ...]`` (:func:`and_plugin.trainer.round_plan`).
        position: The checkpoint's ``(plan index, epoch)`` of the next epoch; None without one.
        where: The run directory, for the line.
        restarts: ``SLURM_RESTART_COUNT`` of this attempt.

    Returns:
        ``"resumed from round r, epoch e/n (...)"`` naming the last finished epoch, or
        ``"starting round r, epoch 1/n (...)"`` for a fresh run.
    """
    attempt = f"SLURM restart {restarts}" if restarts else "first attempt"
    if position is None or tuple(position) == (0, 0) or not plan:
        first = plan[0] if plan else (0, 0)
        return f"starting round {first[0]}, epoch 1/{first[1]} (no checkpoint in {where}; {attempt})"
    index, epoch = int(position[0]), int(position[1])
    if epoch == 0:  # at a round boundary: the last finished epoch is the previous round's last
        index, epoch = index - 1, plan[index - 1][1]
    round_index, epochs = plan[index]
    finished = " — the run is finished, nothing is left to train" if (index, epoch) == (len(plan) - 1, epochs) else ""
    return f"resumed from round {round_index}, epoch {epoch}/{epochs} (checkpoint.pt in {where}; {attempt}){finished}"


class EpochLog:
    """Trainer callback (rank 0): one line per epoch, and one per finished round after its last epoch's."""

    def __init__(self) -> None:
        self._round_line: str | None = None

    def on_round_end(self, trainer: Any, record: dict[str, Any]) -> None:
        parts = []
        if isinstance(record.get("knn"), float):
            parts.append(f"kNN top-1 {record['knn']:.4f}")
            if isinstance(record.get("knn_bank"), float):
                parts[-1] += f" (bank {record['knn_bank']:.4f})"
        if record.get("anchors") is not None:
            parts.append(f"anchors {record['anchors']}")
        self._round_line = f"round {record['round']} done" + (f": {', '.join(parts)}" if parts else "")

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        epochs = dict(trainer.plan).get(record["round"], "?")
        _say(f"round {record['round']} epoch {record['epoch'] + 1}/{epochs}: loss {record['loss']:.4f}, "
             f"lr {record['lr']:.4g}, {record['images_per_s']:.0f} img/s, {record['seconds']:.1f} s")
        if self._round_line is not None:  # the trainer ends a round before it logs the round's last epoch
            _say(self._round_line)
            self._round_line = None
