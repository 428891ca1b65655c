"""``lateragkit serve``: an HTTP search service over lateragkit indexes (FastAPI + uvicorn).

Install with ``pip install "lateragkit[serve]"``. Build the app with :func:`create_app` (tests and embedding)
or run ``lateragkit serve NAME [NAME ...]``.
"""
from __future__ import annotations

from ..exceptions import MissingExtraError

try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(
        f"the HTTP service needs FastAPI and uvicorn ({exc.name} is missing): pip install 'lateragkit[serve]'"
    ) from exc

from .app import create_app  # noqa: E402
from .limits import Limits  # noqa: E402
from .runner import BackgroundServer, is_loopback, run  # noqa: E402
from .served import ServedIndexes  # noqa: E402

__all__ = ["create_app", "Limits", "BackgroundServer", "ServedIndexes", "is_loopback", "run"]
