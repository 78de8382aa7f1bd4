"""Rich progress bars with rate and ETA for every long loop."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Rate(TextColumn):
    """Images per second of the task (``images`` field), updated as the bar advances."""

    def __init__(self) -> None:
        super().__init__("{task.fields[rate]}")


@contextmanager
def progress_bar(total_steps: int, description: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A bar over ``total_steps`` steps that shows images/s, elapsed time and ETA.

    Args:
        total_steps: Number of steps (batches).
        description: Left-hand label.
        enabled: False yields a no-op (non-zero ranks, tests).

    Yields:
        ``advance(images)``: call once per step with the number of images it processed.
    """
    if not enabled:
        yield lambda images: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=True,
    )
    with progress:
        task = progress.add_task(description, total=total_steps, rate="")
        images_seen = 0

        def advance(images: int) -> None:
            nonlocal images_seen
            images_seen += images
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{images_seen / elapsed:,.0f} img/s" if elapsed > 0 else ""
            progress.update(task, advance=1, rate=rate)

        yield advance
