"""Run the app under uvicorn with a graceful SIGTERM drain that exits 0."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from .app import create_app
from .core import State
from .protocol import guarded_protocol
from .settings import ServerSettings

__all__ = ["open_file_room", "serve"]

# Descriptors the process needs besides client connections: model files, the listening socket, logs, threads' pipes.
_OWN_FILES = 256


def open_file_room(connections: int) -> str | None:
    """Raise the soft open-file limit (up to the hard one) so `connections` fit; a warning where they still do not.

    Past the limit the OS refuses connections before --max-connections can answer them (and asyncio pauses accepting
    for a second); many systems start processes with a soft limit of 1,024.
    """
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    wanted = connections + _OWN_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < wanted:
        return (
            f"onnxbert serve: warning: the open-file limit ({soft}) leaves room for about {soft - _OWN_FILES} "
            f"connections, under --max-connections {connections}; raise it (ulimit -n) or lower --max-connections"
        )
    return None


class _Server(uvicorn.Server):
    """uvicorn, except that SIGTERM marks the app draining and is not re-raised after the drain.

    uvicorn re-raises a captured SIGTERM once it has shut down, which would end the process with -15; a finished
    drain is a clean exit, so orchestrators see 0.
    """

    def __init__(self, config: uvicorn.Config, state: State) -> None:
        super().__init__(config)
        self._state = state
        self.drain_timed_out = False

    async def _wait_tasks_to_complete(self) -> None:
        # uvicorn cancels what is still running when this outlasts timeout_graceful_shutdown; note it, so that the
        # exit says so instead of "drained".
        self.drain_timed_out = True
        await super()._wait_tasks_to_complete()
        self.drain_timed_out = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.draining = True  # /health turns 503 at once; requests already admitted still finish
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            self._captured_signals.remove(sig)


def serve(
    directory: str | Path,
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    drain_seconds: float = 30.0,
) -> int:
    """Serve until SIGTERM or Ctrl-C; in-flight requests finish (up to `drain_seconds`) before the exit."""
    if not Path(directory).is_dir():
        raise ValueError(f"{directory} is not a model directory; create one with `onnxbert export`")
    app = create_app(directory, settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=int(drain_seconds),
        timeout_keep_alive=int(settings.idle_timeout_s),
        http=guarded_protocol(settings, app.state.onnxbert.metrics),
        access_log=False,
    )
    state = app.state.onnxbert
    server = _Server(config, state)
    if warning := open_file_room(settings.max_connections):
        print(warning, file=sys.stderr)

    def fail(reason: str) -> None:  # a server that can never be ready should say so and exit, not idle at 503
        print(f"onnxbert serve: error: the model failed to load: {reason}", file=sys.stderr)
        server.should_exit = True

    state.on_load_error = fail
    server.run()
    if state.load_error is not None:
        return 1
    if server.drain_timed_out:
        print(
            f"onnxbert serve: the drain did not finish within {drain_seconds:g} s; requests still running were "
            "cancelled, exiting 1",
            file=sys.stderr,
        )
        return 1
    print("onnxbert serve: drained, exiting", file=sys.stderr)
    return 0 if server.started else 1
