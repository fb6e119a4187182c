"""Child server processes for local services: spawn detached, find by pid file, stop, wait."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

POLL_INTERVAL_S = 0.1


class ServiceError(Exception):
    """A local service could not be installed, started or stopped."""


def spawn(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start argv in its own session (so it outlives a CLI that started it), output to log_path."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def read_pid(pid_path: Path, expected_name: str) -> int | None:
    """The pid in pid_path if that process is alive and its command line names expected_name."""
    try:
        pid = int(pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if expected_name.encode() not in cmdline or is_zombie(pid):
        return None
    return pid


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def stop_process(pid: int, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM pid and wait for it to exit; SIGKILL it if it is still there after timeout_s."""
    _signal(pid, signal.SIGTERM)
    if _wait_exit(pid, proc, timeout_s):
        return
    _signal(pid, signal.SIGKILL)
    if not _wait_exit(pid, proc, 10.0):
        raise ServiceError(f"process pid={pid} did not exit after SIGKILL")


def kill_and_wait(pid: int, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGKILL pid and wait until it is gone (reaped, when it is our own child)."""
    _signal(pid, signal.SIGKILL)
    if not _wait_exit(pid, proc, timeout_s):
        raise ServiceError(f"process pid={pid} did not exit after SIGKILL")


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_exit(pid: int, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> bool:
    if proc is not None and proc.pid == pid:  # our own child: reap it, or it stays a zombie
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    return wait_until(lambda: not Path(f"/proc/{pid}").exists() or is_zombie(pid), timeout_s)


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll condition until it is true (True) or timeout_s passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def port_accepts(host: str, port: int) -> bool:
    """True if a TCP connection to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def find_program(name: str) -> str:
    """Absolute path of a program, also looking in the sbin folders that PATH may lack."""
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/usr/local/sbin"]:
        candidate = Path(folder) / name
        if folder and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServiceError(f"{name} not found; run deploy/local/install.sh (make setup)")


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid``, from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found
