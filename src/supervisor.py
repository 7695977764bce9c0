"""Start the training process, stream its reports, and measure its CPU and wall time.

The CPU times come from wait4(), which returns the resource usage of exactly that child (its own
threads included), so two runs of a sweep never mix their numbers the way RUSAGE_CHILDREN would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# Seconds the training process gets to finish after SIGINT before it is killed.
INTERRUPT_GRACE_S = 10.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that the run is recorded before the job exits."""


def interrupt_source(interrupt: KeyboardInterrupt) -> str:
    return "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"


def raise_terminated(signum: int, frame: Any) -> None:
    """Signal handler for SIGTERM: turn it into an exception the cleanup code catches."""
    raise Terminated("SIGTERM")


@dataclass
class WorkerResult:
    """Exit status and resource usage of the training process."""

    exit_code: int | None = None
    user_time_s: float | None = None
    system_time_s: float | None = None
    total_time_s: float | None = None
    interrupted: bool = False
    # What stopped the job: "Ctrl-C" or "SIGTERM"; set with `interrupted`.
    interrupted_by: str = ""
    malformed_reports: list[str] = field(default_factory=list)

    @property
    def killed_by(self) -> str | None:
        """Return the signal's name when the process was ended by a signal."""
        if self.exit_code is None or self.exit_code >= 0:
            return None
        try:
            return signal.Signals(-self.exit_code).name
        except ValueError:
            return "signal {}".format(-self.exit_code)


def run_worker(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    stdout: IO[Any] | None,
    stderr: IO[Any],
    on_report: Callable[[dict], None],
    on_start: Callable[[int], None] = lambda pid: None,
) -> WorkerResult:
    """Run `command` to completion, passing each JSON report it sends to `on_report`.

    The report channel is a pipe whose write end the child finds in WORKER_REPORT_FD. On Ctrl-C
    the child gets SIGINT (and SIGKILL after INTERRUPT_GRACE_S), its remaining reports are still
    delivered, and the KeyboardInterrupt is re-raised carrying the partial result as its
    `worker_result` attribute.
    """
    read_fd, write_fd = os.pipe()
    child_env = dict(env, WORKER_REPORT_FD=str(write_fd))
    result = WorkerResult()

    started = time.perf_counter()
    try:
        process = subprocess.Popen(
            command, cwd=str(cwd), env=child_env, stdout=stdout, stderr=stderr, pass_fds=(write_fd,)
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)

    with os.fdopen(read_fd, "r", encoding="utf-8") as reports:
        try:
            on_start(process.pid)
            for report in _read_reports(reports, result):
                on_report(report)
        except KeyboardInterrupt as interrupt:
            result.interrupted = True
            result.interrupted_by = interrupt_source(interrupt)
            _stop(process, result)
            for report in _read_reports(reports, result):
                on_report(report)
            _collect(process, started, result)
            interrupt.worker_result = result  # type: ignore[attr-defined]
            raise
        except BaseException as error:
            # A failure on this side, such as an unreachable tracking server, or a report handler
            # that stops the run, must not leave the child training while no process reads its reports.
            process.kill()
            _collect(process, started, result)
            error.worker_result = result  # type: ignore[attr-defined]
            raise

    _collect(process, started, result)
    return result


def _read_reports(stream: IO[str], result: WorkerResult) -> Iterator[dict]:
    for line in stream:
        try:
            report = json.loads(line)
        except ValueError:
            # The child's own code writes these lines, so a bad one is a bug there; keep it for the record.
            log.warning("Ignoring a malformed report from the training process: %r", line[:200])
            result.malformed_reports.append(line)
            continue
        if isinstance(report, dict) and "event" in report:
            yield report


def _stop(process: subprocess.Popen, result: WorkerResult) -> None:
    """Give the child the same SIGINT the terminal sent us, then kill it if it lingers."""
    if process.returncode is not None:
        return
    try:
        process.send_signal(signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + INTERRUPT_GRACE_S
    try:
        while time.monotonic() < deadline:
            if _reap(process, result, block=False):
                return
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stop waiting politely
    log.warning("The training process did not stop within %.0f s of SIGINT; killing it.", INTERRUPT_GRACE_S)
    process.kill()


def _reap(process: subprocess.Popen, result: WorkerResult, block: bool) -> bool:
    """Wait for the child with wait4() so that its resource usage is kept; True once it has exited."""
    if process.returncode is not None:
        return True
    pid, status, usage = os.wait4(process.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return False
    # Popen does not wait again for a child whose returncode is set.
    process.returncode = os.waitstatus_to_exitcode(status)
    result.user_time_s = usage.ru_utime
    result.system_time_s = usage.ru_stime
    return True


def _collect(process: subprocess.Popen, started: float, result: WorkerResult) -> None:
    _reap(process, result, block=True)
    result.exit_code = process.returncode
    result.total_time_s = time.perf_counter() - started
