"""A finished job's outcome: its rank-0 result, or its failure reduced to the reason and the end of its stderr."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import submitit

__all__ = ["ACTIVE_STATES", "JobFailedError", "error_text", "failure_reason", "job_result", "slurm_state", "wait_for"]


class JobFailedError(RuntimeError):
    """A submitted job failed; the message carries the job's error text (the end of its stderr)."""


def _stderr_tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return f"(no stderr file at {path})"
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(stderr {path} is empty)"


def error_text(job: submitit.Job, lines: int = 40) -> str:
    """The end of the job's stderr: rank 0's, and that of every other task that raised.

    With several tasks the first failure may be on any rank (the others then only report a lost
    connection), so each task whose log holds a traceback is shown, headed by its rank.
    """
    if job.num_tasks == 1:
        return _stderr_tail(Path(job.paths.stderr), lines)
    parts = []
    for rank in range(job.num_tasks):
        path = Path(job.task(rank).paths.stderr)
        text = path.read_text(errors="replace") if path.is_file() else ""
        if rank == 0 or "Traceback" in text:
            parts.append(f"--- task {rank}: {path} ---\n{_stderr_tail(path, lines)}")
    return "\n".join(parts)


def failure_reason(text: str, fallback: str) -> str:
    """The exception line of a traceback (``ValueError: ...``), else the last line."""
    # torch.distributed prefixes every line of a rank's traceback with "[rank<r>]:"
    lines = [re.sub(r"^\[rank\d+\]:\s*", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("--- task")]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head and " " not in head and (head.endswith(("Error", "Exception", "Interrupt")) or head == "Exit"):
            return line
    return lines[-1] if lines else fallback


#: SLURM job states of a job that has not ended (a requeued job passes through several of them).
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "COMPLETING",
                           "CONFIGURING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"})


def slurm_state(job_id: str) -> str | None:
    """The state of the job's latest attempt (``sacct``), None when SLURM cannot tell."""
    try:
        out = subprocess.run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "State"],
                             capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.split()[0] for line in out.splitlines() if line.strip()]
    return lines[-1] if lines else None


def job_result(job: submitit.Job) -> Any:
    """The result of rank 0 of a job with one or several tasks (raises the job's error).

    Only rank 0's result is read: after a requeue the other ranks' result files may still be
    those of the interrupted attempt (which lost its connection to rank 0) until they finish.
    """
    return job.task(0).result()


def wait_for(job: submitit.Job, console: Any = None, poll_s: float = 2.0) -> Any:
    """Waits for ``job`` and returns its (rank 0) result; on failure prints its stderr tail and raises.

    Raises:
        JobFailedError: Naming the job and the error, and carrying the end of its stderr.
    """
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = console or Console(stderr=True)
    last_state = None
    while True:
        state = job.state
        if state == "UNKNOWN" and last_state in (None, "PENDING"):
            state = "PENDING"  # sbatch accepted it; sacct has no record of it yet
        if state != last_state:
            console.print(f"job {job.job_id}: {state}", markup=False)
            last_state = state
        # A result written by an attempt that was then requeued (its processes ended by the
        # requeue) is not the job's: wait while SLURM runs the job again.
        if job.done() and slurm_state(job.job_id) not in ACTIVE_STATES:
            break
        time.sleep(poll_s)
    try:
        result = job_result(job)
    except Exception as error:  # submitit's FailedJobError / UncompletedJobError
        text = error_text(job)
        reason = failure_reason(text, f"{type(error).__name__}: {error}")
        console.print(Panel(Text(text), title=f"job {job.job_id} failed: end of its stderr", border_style="red"))
        console.print(f"job {job.job_id} failed: {reason}", style="bold red", markup=False, soft_wrap=True)
        raise JobFailedError(f"SLURM job {job.job_id} failed: {reason}\nEnd of its stderr:\n{text}") from error
    console.print(f"job {job.job_id} finished: {_summary(result)}", style="bold green", markup=False, soft_wrap=True)
    return result


def _summary(result: Any) -> str:
    if isinstance(result, dict) and "rounds" in result:
        knn = ", ".join(
            f"round {r.get('round')}: {r['knn']:.4f}" for r in result["rounds"] if isinstance(r.get("knn"), float)
        )
        return f"kNN top-1 {knn or 'n/a'}; output in {result.get('output_dir')}"
    return repr(result)



_failure_reason = failure_reason  # the name earlier versions used
