"""The optional API key: checked on every route but ``/health``, in constant time.

No ``from __future__ import annotations``: FastAPI evaluates the dependency's annotations at run time.
"""

import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

API_KEY_HEADER = "X-API-Key"
_HOW = f"send it in the {API_KEY_HEADER} header or as 'Authorization: Bearer KEY'"


def _digest(key: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison's time independent of the key's length too.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def api_key_dependency(api_key: str) -> Callable[..., None]:
    """A FastAPI dependency that accepts a request only when it carries ``api_key``."""
    if not isinstance(api_key, str) or not api_key:
        raise ValueError("the API key must be a non-empty string (or None for an open service)")
    expected = _digest(api_key)
    header_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
    bearer_scheme = HTTPBearer(auto_error=False)

    def check_api_key(
        header: Annotated[str | None, Security(header_scheme)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
    ) -> None:
        given = header if header is not None else (bearer.credentials if bearer is not None else None)
        if not given:
            raise HTTPException(401, f"missing API key: {_HOW}", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(_digest(given), expected):
            raise HTTPException(401, f"wrong API key: {_HOW}", headers={"WWW-Authenticate": "Bearer"})

    return check_api_key
