"""`onnxbert serve` as a child process: started on a free loopback port, ready once /health says so.

What the tests, the load benchmarks and a supervising script need alike; stdlib only, so it imports anywhere.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerProcess", "ServerStartError", "free_port", "running_server", "start_server"]


class ServerStartError(RuntimeError):
    """The server exited, or never answered /health with 200, before the deadline."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """A started `onnxbert serve` and its base URL."""

    process: subprocess.Popen[str]
    url: str

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):  # refused while starting, 503 while loading
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        """Until /health answers 200; a server that exits first (a bad flag, a model that fails to load) raises."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stderr.read() if self.process.stderr else ""
                raise ServerStartError(f"server exited with status {self.process.returncode}: {output}".strip())
            if self._healthy():
                return
            time.sleep(0.05)
        raise ServerStartError(f"server at {self.url} did not become ready in {timeout:.0f}s")

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (a graceful drain), then SIGKILL after `timeout`; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    directory: str | Path, *flags: str, capture_output: bool = False, code: str | Path | None = None
) -> ServerProcess:
    """`onnxbert serve DIRECTORY FLAGS` on a free loopback port (log level warning unless FLAGS say otherwise).

    `capture_output`: stdout and stderr piped (text) for the caller to read, else inherited.
    `code`: a folder holding another build of the `onnxbert` package (`pip install --no-deps --target DIR`), run
    instead of this one: how a benchmark pairs two versions of the server.
    """
    port = free_port()
    directory = Path(directory).resolve()
    command = [sys.executable, "-m", "onnxbert", "serve", str(directory), "--port", str(port), "--log-level"]
    pipe = subprocess.PIPE if capture_output else None
    env, cwd = None, None
    if code is not None:  # run from that folder: `python -m` puts the working directory first on sys.path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
        cwd = str(code)
    process = subprocess.Popen([*command, "warning", *flags], stdout=pipe, stderr=pipe, text=True, env=env, cwd=cwd)
    return ServerProcess(process, f"http://127.0.0.1:{port}")


@contextmanager
def running_server(
    directory: str | Path, *flags: str, wait: bool = True, capture_output: bool = False, timeout: float = 120
) -> Iterator[ServerProcess]:
    """A started server (ready, unless `wait=False`), stopped with SIGTERM on exit."""
    server = start_server(directory, *flags, capture_output=capture_output)
    try:
        if wait:
            server.wait_ready(timeout)
        yield server
    finally:
        server.stop()
