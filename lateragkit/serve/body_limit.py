"""ASGI middleware that refuses request bodies above a size (413), declared or streamed."""
from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Answers 413 when ``Content-Length`` exceeds ``max_bytes``, and stops reading a chunked body as soon
    as it does (the HTTPException raised while reading becomes the 413 response)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: str) -> str:
        return (f"request body is {size}, over this server's limit of {self.max_bytes} bytes: "
                "send fewer queries or documents per request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._message(f"{declared} bytes")}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message(f"more than {self.max_bytes} bytes"))
            return message

        await self.app(scope, limited_receive, send)
