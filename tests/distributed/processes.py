"""Runs several Python processes at once, as the workers of one cluster."""

import contextlib
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


def free_ports(count):
    """Ports on 127.0.0.1 that were free a moment ago (the OS picks them)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def run_all(commands, timeout_s):
    """Starts every `(module, args, env)` at once; kills them all after `timeout_s` seconds.

    Args:
        commands: `(module, args, env)` triples: `python -m module *args` with
            `env` added to this process's environment.
        timeout_s: Wall-clock limit for all of them together.

    Returns:
        The `(returncode, stdout, stderr)` of each command.
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO, env={**os.environ, **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for module, args, env in commands
    ]
    deadline = time.monotonic() + timeout_s
    try:
        results = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append((proc.returncode, stdout, stderr))
        return results
    except subprocess.TimeoutExpired:
        pytest.fail(f"the processes did not finish within {timeout_s} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
