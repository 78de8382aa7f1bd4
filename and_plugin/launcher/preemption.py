"""Preemption inside a SLURM job: a ``USR2`` handler that only records, and a requeue done outside it.

SLURM delivers a preemption's ``USR2`` (and the one submitit asks for 90 s before the time
limit; ``scancel --signal=USR2`` does the same by hand) to every process of the job step: each
task's main process and every process forked from it, DataLoader workers included. A forked
worker inherits the Python handler of its parent, so with submitit's own handler every worker
of rank 0 also checkpointed and ran ``scontrol requeue``: they raced the main process for the
job's pickle (``No file was saved at the temporary path``, or no pickle at all for the requeued
attempt) and for the requeue (``CalledProcessError``), and their ``sys.exit`` surfaced as
``DataLoader worker exited unexpectedly``. Running ``scontrol`` from inside the handler could
also deadlock when the signal landed while workers were being forked, and the ``SystemExit``
raised there could be swallowed, leaving an attempt training after it had requeued itself.

:func:`install_preemption_handler` replaces submitit's ``USR2`` handler in the job's main
process by :class:`PreemptionHandler`:

- The handler acts only in the process that installed it (``os.getpid()``); a forked child
  ignores ``USR2`` from the moment it exists (``os.register_at_fork``) and, should the signal
  be pending already, the handler returns there without doing anything.
- In the main process the handler only writes one byte to a pipe (async-signal-safe: no lock,
  no fork, no exception). A thread waiting on that pipe does the work, outside the handler,
  once: on rank 0 it writes submitit's checkpoint (the same job, resuming; atomically), runs
  ``scontrol requeue`` deaf to SIGTERM and ``USR2`` (the requeue makes SLURM send SIGTERM to
  every process of the job, ``scontrol`` included, and a second ``USR2`` reaches it as well)
  and ends this attempt with ``os._exit`` so it
  cannot train on. A requeue that SLURM reports as failed while the job's restart count has
  already gone up (a second signal, an administrator, SLURM itself) counts as done. Ranks other
  than 0 only log: rank 0 requeues the whole job.
- Further signals are logged and ignored.

Nothing of the training state is saved here: the trainer's atomic per-epoch checkpoint is the
state the requeued attempt resumes from (the interrupted epoch is redone identically).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

__all__ = ["PreemptionHandler", "RequeueError", "install_preemption_handler", "requeue_job"]

#: Seconds ``scontrol`` may take before the requeue is given up.
SCONTROL_TIMEOUT_S = 60

_installed: PreemptionHandler | None = None
_fork_hook_registered = False


class RequeueError(RuntimeError):
    """``scontrol requeue`` failed and the job was not requeued by anyone else either."""


#: Signals a requeue (and a preemption) sends to every process of the job, ``scontrol`` included.
JOB_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def _scontrol(*args: str) -> subprocess.CompletedProcess[str]:
    """``scontrol ARGS``, deaf to the job's signals: the calling thread blocks them (see
    :meth:`PreemptionHandler._serve`; the child inherits the mask) and ``trap ''`` ignores them
    (that survives ``exec``).

    Started with ``os.posix_spawn`` and reaped with ``waitpid``; its output goes to a temporary
    file. No pipe is involved — neither for the output nor, as ``subprocess`` uses, to learn
    whether ``exec`` worked: a DataLoader worker the main thread forks meanwhile inherits every
    open descriptor, and a pipe it holds open never reaches its end, so the requeue would wait
    for that worker (which SLURM kills, with the job). No ``preexec_fn`` either (it forks through
    Python's fork hooks).
    """
    shell = shutil.which("sh") or "/bin/sh"
    argv = [shell, "-c", 'trap "" TERM USR1 USR2; exec scontrol "$@"', "scontrol", *args]
    with tempfile.TemporaryFile("w+") as out, open(os.devnull) as null:
        pid = os.posix_spawn(shell, argv, dict(os.environ), file_actions=[
            (os.POSIX_SPAWN_DUP2, null.fileno(), 0), (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 2)])
        deadline = time.monotonic() + SCONTROL_TIMEOUT_S
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(argv, SCONTROL_TIMEOUT_S)
            time.sleep(0.02)
        out.seek(0)
        return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), out.read(), "")


def restart_count(job_id: str) -> int | None:
    """SLURM's restart count of ``job_id`` (``scontrol show job``), None when it cannot be read."""
    try:
        shown = _scontrol("show", "job", "-o", job_id)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\bRestarts=(\d+)", shown.stdout)
    return int(match.group(1)) if match else None


def requeue_job(job_id: str, restarts: int) -> str:
    """Requeues ``job_id``; "already requeued" is success.

    Args:
        job_id: The SLURM job id.
        restarts: ``SLURM_RESTART_COUNT`` of the attempt asking (0 for the first attempt).

    Returns:
        What happened, for the log: ``"requeued"`` or ``"already requeued (...)"``.

    Raises:
        RequeueError: ``scontrol requeue`` failed and the job's restart count did not go up.
    """
    for _ in range(3):  # again only when scontrol died of a signal before it could ask
        try:
            done = _scontrol("requeue", job_id)
        except (OSError, subprocess.TimeoutExpired) as error:
            done = subprocess.CompletedProcess(["scontrol"], 1, f"{type(error).__name__}: {error}", "")
        if done.returncode == 0:
            return "requeued"
        now = restart_count(job_id)
        if now is not None and now > restarts:
            return f"already requeued (restart count {now}; scontrol said: {done.stdout.strip() or done.returncode})"
        if done.returncode > 0:
            break
    raise RequeueError(f"scontrol requeue {job_id} failed (exit {done.returncode}): "
                       f"{done.stdout.strip() or 'no output'}")


def _ignore_usr2_in_child() -> None:
    """Runs in every child forked from the main process (DataLoader workers): ``USR2`` is not theirs."""
    handler = _installed
    if handler is None or os.getpid() == handler.pid:
        return
    try:
        signal.signal(handler.signum, signal.SIG_IGN)
    except (ValueError, OSError):  # forked from a thread other than the main one: the pid check still guards
        pass


class PreemptionHandler:
    """The ``USR2`` handler of one job process; see the module docstring.

    Args:
        owner: submitit's ``SignalHandler`` of this process (its ``env``, ``_delayed``,
            ``_job_paths``, ``has_timed_out`` and logger are used to checkpoint as submitit does).
        signum: The preemption signal (submitit's, ``USR2`` unless ``SUBMITIT_PREEMPT_SIGNAL``).
    """

    def __init__(self, owner: Any, signum: int) -> None:
        self.owner = owner
        self.signum = signum
        self.pid = os.getpid()
        self.signals = 0  # received by this process; written by the handler only
        self.failed = False  # the requeue failed: this attempt trains on
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._serve, name="and-preemption", daemon=True)
        self._thread.start()

    @property
    def log(self) -> logging.Logger:
        return self.owner._logger

    def __call__(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:
            return  # a forked child (a DataLoader worker) that got the signal before it could ignore it
        self.signals += 1
        if self.signals == 1 and self.owner.env.global_rank == 0:
            self._mute_worker_deaths()
        try:
            os.write(self._write, b"\x01")
        except OSError:  # the pipe is full: the thread has more signals to log than it needs
            pass

    def _mute_worker_deaths(self) -> None:
        """While rank 0 requeues, loader workers ended by the requeue's SIGTERM are not an error.

        torch's SIGCHLD handler raises ``DataLoader worker ... is killed by signal: Terminated``
        in the main thread as soon as a worker dies; it would fail the attempt (and write a
        failed result) in the moment between the requeue and the end of the attempt. Here it is
        passed over unless the requeue failed (torch also finds dead workers by polling them).
        """
        previous = signal.getsignal(signal.SIGCHLD)
        if not callable(previous):
            return

        def on_child(signum: int, frame: Any) -> None:
            if self.failed:
                previous(signum, frame)

        signal.signal(signal.SIGCHLD, on_child)

    def _serve(self) -> None:
        # The job's signals go to the main thread (whose handlers run there anyway), never to this
        # one, and the children it starts (scontrol) inherit them blocked.
        signal.pthread_sigmask(signal.SIG_BLOCK, {*JOB_SIGNALS, self.signum})
        acted = False
        while os.read(self._read, 1):
            if acted:
                self.log.warning(f"Caught signal {signal.Signals(self.signum).name} again: ignored, "
                                 "this job is already being requeued")
                continue
            acted = True
            try:
                self._act()
            except Exception as error:  # noqa: BLE001  (reported loudly; the attempt goes on until SLURM ends it)
                self.failed = True
                self._report_failure(f"preemption: the job could not be requeued: {type(error).__name__}: {error}")

    def _act(self) -> None:
        from submitit.core.job_environment import _checkpoint

        owner, env = self.owner, self.owner.env
        timed_out = owner.has_timed_out()
        case = "timed-out" if timed_out else "preempted"
        self.log.warning(f"Caught signal {signal.Signals(self.signum).name}: this job is {case}.")
        if env.global_rank != 0:
            self.log.info(f"Rank {env.global_rank}: rank 0 checkpoints and requeues the job.")
            return
        delayed = owner._delayed
        countdown = delayed._timeout_countdown - timed_out
        if countdown < 0:
            self._end_without_requeue("timed-out too many times")
        reason = _checkpoint(delayed, owner._job_paths.submitted_pickle, countdown)  # atomic rename
        if reason:
            self._end_without_requeue(reason)
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        outcome = requeue_job(str(env.job_id), restarts)
        more = f"; {self.signals - 1} later signal(s) ignored" if self.signals > 1 else ""
        self.log.info(f"Requeued job {env.job_id} ({outcome}; {countdown} remaining timeouts{more}); "
                      "this attempt ends now, the next one resumes from the last checkpoint")
        _exit(0)

    def _end_without_requeue(self, reason: str) -> None:
        message = f"Job not requeued because: {reason}."
        self._report_failure(message)
        _exit(1)

    def _report_failure(self, message: str) -> None:
        """Logs ``message`` and leaves it as the job's result, so ``--wait`` / ``job.result()`` show it.

        Should the training still finish, its own result replaces this one.
        """
        from submitit.core import utils

        self.log.error(message)
        try:
            with utils.temporary_save_path(self.owner._job_paths.result_pickle) as path:
                utils.cloudpickle_dump(("error", f"RuntimeError: {message}"), path)
        except Exception as error:  # noqa: BLE001
            self.log.error(f"could not write the job's result: {error}")


def _exit(code: int) -> None:
    """Ends this process now, whatever its main thread is doing (the state on disk is consistent:
    checkpoints are renamed into place, ``metrics.jsonl`` is rewritten from the checkpoint on resume)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    logging.shutdown()
    os._exit(code)


def install_preemption_handler() -> bool:
    """Replaces submitit's preemption handler of this process by a :class:`PreemptionHandler`.

    Call it in the job's main process before any DataLoader worker is forked; calling it again
    does nothing.

    Returns:
        True if submitit's handler was found and replaced (inside a submitit job), or had been.
    """
    global _installed, _fork_hook_registered
    from submitit.core.job_environment import JobEnvironment, SignalHandler

    signum = JobEnvironment._usr_sig()
    current = signal.getsignal(signum)
    if isinstance(current, PreemptionHandler):
        return True
    owner = getattr(current, "__self__", None)
    if not isinstance(owner, SignalHandler):
        return False  # not inside a submitit job (or someone else's handler): leave it
    _installed = PreemptionHandler(owner, signum)
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_ignore_usr2_in_child)
        _fork_hook_registered = True
    signal.signal(signum, _installed)
    return True
