"""Request and response bodies of the HTTP service.

The request bodies are declared once here with their types (``SearchBody`` …); :func:`request_models`
derives, for one :class:`Limits`, subclasses whose fields carry the limits, so that pydantic checks them
(422 naming the field) and the OpenAPI schema shows them.

No ``from __future__ import annotations``: the constrained subclasses are created inside a function and
pydantic and FastAPI read annotations at run time.
"""
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

from .limits import Limits

Mode = Literal["late", "bm25", "hybrid"]
Fusion = Literal["rrf", "normalized"]
_FORBID = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------- requests
class SearchBody(BaseModel):
    """Give exactly one of ``query`` or ``queries``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": "what is late interaction?", "k": 5}]}
    )
    query: str | None = None
    queries: list[str] | None = None
    k: StrictInt = Field(10, description="results per query")
    index: str | None = Field(None, description="which served index; may be left out when only one is served")
    filter: dict[str, Any] | None = Field(None, description="keep documents whose metadata equals every key/value")
    doc_ids: list[str] | None = Field(None, description="search only these documents")
    mode: Mode | None = Field(None, description="late (default), bm25 or hybrid")
    alpha: float | None = Field(
        None, ge=0.0, le=1.0,
        description="hybrid: weight of late interaction against BM25, 0 to 1 (default: the library's)",
    )
    fusion: Fusion | None = Field(
        None, description="hybrid: rrf (reciprocal-rank fusion, default) or normalized (min-max score fusion)"
    )

    @model_validator(mode="after")
    def _one_query_field(self) -> "SearchBody":
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' (a string) or 'queries' (a list of strings)")
        return self


class RerankBody(BaseModel):
    model_config = _FORBID
    query: str
    documents: list[str]
    k: StrictInt = Field(10, description="results to return")
    index: str | None = Field(None, description="whose model scores the documents (default: the only one)")


class NewDocument(BaseModel):
    model_config = _FORBID
    text: str
    id: str | None = Field(None, description="an indexed id is replaced (upsert); left out: a new uuid4")
    metadata: dict[str, Any] | None = None


class AddBody(BaseModel):
    model_config = _FORBID
    documents: list[NewDocument]
    index: str | None = Field(None, description="which served index; may be left out when only one is served")

    @model_validator(mode="after")
    def _unique_ids(self) -> "AddBody":
        counts = Counter(d.id for d in self.documents if d.id is not None)
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(f"document ids repeat within the request ({repeated[:5]}): send each id once")
        return self


class DeleteBody(BaseModel):
    model_config = _FORBID
    document_ids: list[str]
    index: str | None = Field(None, description="which served index; may be left out when only one is served")


@dataclass(frozen=True)
class RequestModels:
    """The request body classes of one app, each a subclass of the body declared above."""

    search: type[SearchBody]
    rerank: type[RerankBody]
    add: type[AddBody]
    delete: type[DeleteBody]


def request_models(limits: Limits) -> RequestModels:
    """Subclasses of the request bodies whose fields carry ``limits``."""
    Query = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_query_chars)]
    DocId = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_id_chars)]
    Text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_document_chars)]
    K = Annotated[StrictInt, Field(ge=1, le=limits.max_k, description="results per query")]

    class SearchRequest(SearchBody):
        __doc__ = SearchBody.__doc__
        query: Query | None = None
        queries: Annotated[list[Query], Field(min_length=1, max_length=limits.max_queries)] | None = None
        k: K = 10
        doc_ids: Annotated[list[DocId], Field(max_length=limits.max_ids)] | None = None

    class RerankRequest(RerankBody):
        query: Query
        documents: Annotated[list[Text], Field(min_length=1, max_length=limits.max_rerank_documents)]
        k: K = 10

    class Document(NewDocument):
        text: Text
        id: DocId | None = None

    class AddDocumentsRequest(AddBody):
        documents: Annotated[list[Document], Field(min_length=1, max_length=limits.max_documents)]  # type: ignore[assignment]

    class DeleteDocumentsRequest(DeleteBody):
        document_ids: Annotated[list[DocId], Field(min_length=1, max_length=limits.max_ids)]

    return RequestModels(SearchRequest, RerankRequest, AddDocumentsRequest, DeleteDocumentsRequest)


# ------------------------------------------------------------------------------------------- responses
class SearchHit(BaseModel):
    """One passage found by ``/search`` (the library's result contract: ``rank`` starts at 1)."""

    content: str
    score: float
    rank: int
    document_id: str
    passage_id: str
    document_metadata: dict[str, Any] | None = None
    start_char: int | None = None
    end_char: int | None = None


class RerankHit(BaseModel):
    """One input document scored by ``/rerank``; ``result_index`` points into the request's ``documents``."""

    content: str
    score: float
    rank: int
    result_index: int


class SearchResponse(BaseModel):
    index: str
    results: list[SearchHit] | list[list[SearchHit]] = Field(
        description="a list of hits for `query`; one list of hits per query for `queries`"
    )


class RerankResponse(BaseModel):
    index: str
    results: list[RerankHit]


class DocumentsResponse(BaseModel):
    index: str
    document_ids: list[str] = Field(description="the documents added/replaced or deleted, in request order")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    indexes: list[str]


class IndexList(BaseModel):
    indexes: list[dict[str, Any]]
