"""metrics.jsonl: one JSON line per record (epoch, round, probe), written by rank 0 only."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Appends records as JSON lines to ``output_dir/metrics.jsonl``.

    Args:
        output_dir: The run directory.
        enabled: False on ranks other than 0 (every call is then a no-op).
    """

    def __init__(self, output_dir: str | Path, enabled: bool = True) -> None:
        self.path = Path(output_dir) / METRICS_NAME
        self.enabled = enabled

    def reset(self, records: Iterable[dict[str, Any]] = ()) -> None:
        """Rewrites the file with ``records`` only.

        On resume it is rewritten from the checkpoint's history, so an epoch logged after the
        last checkpoint (then redone) does not appear twice.
        """
        if self.enabled:
            with open(self.path, "w") as file:
                file.writelines(json.dumps(record) + "\n" for record in records)

    def append(self, record: dict[str, Any]) -> None:
        """Adds one line."""
        if self.enabled:
            with open(self.path, "a") as file:
                file.write(json.dumps(record) + "\n")


__all__ = ["METRICS_NAME", "MetricsLog"]
