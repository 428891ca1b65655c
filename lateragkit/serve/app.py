"""The FastAPI application: ``create_app(index_paths)`` builds it, ``lateragkit serve`` runs it with uvicorn.

Routes: ``POST /search``, ``POST /rerank``, ``POST /documents`` (add / upsert), ``DELETE /documents``,
``GET /indexes``, ``GET /health``; OpenAPI at ``/docs``. With an API key every route but ``/health`` (and the
OpenAPI pages, which hold no data) requires it. Endpoints are plain functions, so FastAPI runs them in its
thread pool: searches run in parallel, writes are serialised by the facade.

No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run time, and the
request classes are local to :func:`create_app`.
"""
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .. import __version__
from ..exceptions import CorruptIndexError, IndexNotFoundError, LateragkitError
from .auth import api_key_dependency
from .body_limit import BodySizeLimit
from .limits import Limits
from .schemas import (
    AddBody,
    DeleteBody,
    DocumentsResponse,
    Health,
    IndexList,
    RequestModels,
    RerankBody,
    RerankResponse,
    SearchBody,
    SearchResponse,
    request_models,
)
from .served import IndexChoiceError, ServedIndexes

logger = logging.getLogger(__name__)


@contextmanager
def facade_errors() -> Iterator[None]:
    """Library errors as HTTP errors: unknown index 404, bad input 400, a damaged index 500."""
    try:
        yield
    except IndexChoiceError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    except IndexNotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    except CorruptIndexError as exc:
        logger.error("corrupt index: %s", exc)
        raise HTTPException(500, f"the index is damaged: {exc}") from exc
    except (LateragkitError, ValueError, TypeError) as exc:
        raise HTTPException(400, str(exc)) from exc


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    parts, status = [], 422
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            status = 400
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            parts.append(f"the request body is not valid JSON ({reason}): send a JSON object")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return status, "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        status, message = _validation_message(exc)
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse({"detail": message, "errors": errors}, status_code=status)

    async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the server log has the details"}, status_code=500
        )

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected_error)


def _search_kwargs(req: SearchBody) -> dict[str, Any]:
    """Keyword arguments of ``RAG.search`` for a search request (``mode``, ``alpha``, ``fusion`` when given)."""
    kwargs: dict[str, Any] = {"k": req.k, "doc_ids": req.doc_ids, "filter": req.filter}
    for name in ("mode", "alpha", "fusion"):
        if getattr(req, name) is not None:
            kwargs[name] = getattr(req, name)
    return kwargs


def create_app(
    index_paths: Sequence[str | Path] | ServedIndexes,
    *,
    api_key: str | None = None,
    limits: Limits | None = None,
    model: str | None = None,
    device: str | None = None,
) -> FastAPI:
    """A FastAPI app serving the given index folders (each under its folder name).

    ``api_key``: required on every data route (``X-API-Key: KEY`` or ``Authorization: Bearer KEY``).
    ``limits``: request bounds (:class:`Limits`). ``model`` overrides the model recorded in the indexes
    (a moved model folder); ``device`` is where the encoder runs.
    """
    check_key = api_key_dependency(api_key) if api_key is not None else None  # a bad key fails before loading
    if isinstance(index_paths, (str, Path)):
        index_paths = [index_paths]
    served = index_paths if isinstance(index_paths, ServedIndexes) else ServedIndexes.open(
        index_paths, model=model, device=device
    )
    limits = limits or Limits()
    app = FastAPI(
        title="lateragkit",
        version=__version__,
        description="Late-interaction (ColBERT) search over lateragkit indexes: "
                    + ", ".join(served.names),
    )
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    _install_error_handlers(app)
    app.state.served = served
    app.state.limits = limits

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness: always open, even with an API key."""
        return {"status": "ok", "version": __version__, "indexes": served.names}

    dependencies = [Depends(check_key)] if check_key is not None else []
    router = APIRouter(dependencies=dependencies)
    _add_routes(router, served, request_models(limits))
    app.include_router(router)
    return app


def _body(endpoint: Callable[..., Any], body_class: type[BaseModel]) -> Callable[..., Any]:
    """``endpoint`` with its ``req`` parameter annotated by the limit-carrying subclass FastAPI validates with
    (the source annotates it with the declared body class, which mypy checks against)."""
    endpoint.__annotations__ = {**endpoint.__annotations__, "req": body_class}
    return endpoint


def _add_routes(router: APIRouter, served: ServedIndexes, models: RequestModels) -> None:
    def search(req: SearchBody) -> dict[str, Any]:
        """Late-interaction (or bm25 / hybrid) search; `query` gives a list of hits, `queries` a list of lists."""
        with facade_errors():
            name, rag = served.resolve(req.index)
            query: str | list[str] = req.query if req.query is not None else (req.queries or [])
            results = rag.search(query, index_name=name, **_search_kwargs(req))
        return {"index": name, "results": results}

    def rerank(req: RerankBody) -> dict[str, Any]:
        """Score `documents` against `query` with MaxSim (no index involved); the best `k`, best first."""
        with facade_errors():
            name, rag = served.resolve(req.index)
            results = rag.rerank(req.query, req.documents, k=req.k)
        return {"index": name, "results": results}

    def add_documents(req: AddBody) -> dict[str, Any]:
        """Add documents; one whose `id` is already indexed is replaced (upsert). Returns the ids."""
        ids = [d.id if d.id is not None else str(uuid.uuid4()) for d in req.documents]
        with facade_errors():
            name, rag = served.resolve(req.index)
            rag.add_to_index(
                [d.text for d in req.documents],
                new_document_ids=ids,
                new_document_metadatas=[d.metadata for d in req.documents],
                index_name=name,
            )
        return {"index": name, "document_ids": ids}

    def delete_documents(req: DeleteBody) -> dict[str, Any]:
        """Delete documents (all their passages) by id; ids that are not indexed are ignored."""
        with facade_errors():
            name, rag = served.resolve(req.index)
            rag.delete_from_index(list(req.document_ids), index_name=name)
        return {"index": name, "document_ids": list(req.document_ids)}

    def indexes() -> dict[str, Any]:
        """What each served index holds: model, passages, documents, segments, format version, last update."""
        with facade_errors():
            return {"indexes": [served.info(name) for name in served.names]}

    router.add_api_route("/search", _body(search, models.search), methods=["POST"], response_model=SearchResponse,
                         response_model_exclude_none=True, tags=["search"])
    router.add_api_route("/rerank", _body(rerank, models.rerank), methods=["POST"], response_model=RerankResponse,
                         tags=["search"])
    router.add_api_route("/documents", _body(add_documents, models.add), methods=["POST"],
                         response_model=DocumentsResponse, tags=["documents"])
    router.add_api_route("/documents", _body(delete_documents, models.delete), methods=["DELETE"],
                         response_model=DocumentsResponse, tags=["documents"])
    router.add_api_route("/indexes", indexes, methods=["GET"], response_model=IndexList, tags=["service"])


__all__: list[str] = ["create_app", "facade_errors"]
