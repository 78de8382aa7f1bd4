"""Helpers shared by the tests that need the local SLURM cluster (marker ``slurm``).

The tests never start the cluster themselves. Start it first with::

    bash slurm/local_cluster.sh install && bash slurm/local_cluster.sh start

Use the ``cluster`` fixture (``from slurm_utils import cluster``): it skips, with the reason,
when ``sinfo`` is not on PATH or no node of the test partition is usable.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

#: The partition the tests submit to (the local cluster's default).
PARTITION = os.environ.get("AND_SLURM_TEST_PARTITION", "debug")


@functools.cache
def cluster_unavailable_reason() -> str | None:
    """None when a node of ``PARTITION`` is usable, else why not (checked once per session)."""
    if shutil.which("sinfo") is None:
        return (
            "sinfo not on PATH (no SLURM); run `bash slurm/local_cluster.sh install "
            "&& bash slurm/local_cluster.sh start`"
        )
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%t"],
            check=False,
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return (
            f"SLURM cluster not up (sinfo: {out.stderr.strip() or out.returncode}); "
            "run `bash slurm/local_cluster.sh start`"
        )
    states = set(out.stdout.split())
    if not states & {"idle", "mix", "alloc"}:
        return f"no usable node in partition {PARTITION!r} (states: {sorted(states) or 'none'})"
    return None


@pytest.fixture
def cluster() -> None:
    """Skip (not fail) when there is no usable SLURM cluster; checked lazily so
    that runs deselecting `-m "not slurm"` never call sinfo (which takes ~10 s
    to give up when the controller is down)."""
    reason = cluster_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def wait_done(job, timeout: float) -> None:
    """job.result() blocks forever on a lost job; poll with a deadline instead.

    On time-out the job is cancelled and the test fails with the ends of its logs.
    """
    deadline = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", str(job.job_id)], check=False)
            out = Path(job.paths.stdout) if job.paths.stdout.exists() else None
            err = job.paths.stderr.read_text()[-3000:] if job.paths.stderr.exists() else ""
            pytest.fail(
                f"job {job.job_id} not done after {timeout}s (state {job.state}); "
                f"stdout={out.read_text()[-2000:] if out else ''!r} stderr={err!r}"
            )
        time.sleep(0.5)
