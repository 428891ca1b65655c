"""Running the app: in the foreground (``lateragkit serve``) or on a background thread (tests, notebooks,
benchmarks), always on an explicit host and port."""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from types import TracebackType
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (Ctrl+C / SIGTERM)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


class _Server(uvicorn.Server):
    """uvicorn's server that tells a waiting thread when it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._ready.set()


class BackgroundServer:
    """``with BackgroundServer(app) as server: httpx.get(server.url + "/health")`` — a real uvicorn server on
    a background thread, bound to ``host`` (loopback by default) and a free port unless ``port`` is given.
    Leaving the block stops it and waits (at most ``stop_timeout`` seconds) for the thread to end."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, start_timeout: float = 60.0,
                 stop_timeout: float = 30.0, log_level: str = "warning") -> None:
        self.host, self.port = host, port
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self._ready = threading.Event()
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
        self._server = _Server(config, self._ready)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self, sock: socket.socket) -> None:
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()  # never leave the starter waiting

    def start(self) -> BackgroundServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), name=f"lateragkit-serve-{self.port}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout) or not self._server.started:
            self.stop()
            sock.close()
            raise RuntimeError(f"the server on {self.url} did not start: {self._error!r}")
        logger.info("serving on %s", self.url)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(self.stop_timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
