"""The `/rerank` HTTP app: `create_app(reranker, settings)` builds a FastAPI app around any `serving.rerankers.Reranker`.

Endpoints:
- `POST /rerank`: Text Embeddings Inference's shape, `{"query", "texts", "raw_scores", "return_text", "truncate"}` ->
  `[{"index", "score"[, "text"]}]`, best first (scores through a sigmoid unless `raw_scores`);
- `POST /v1/rerank`, `POST /v2/rerank`: the Cohere/Jina shape, `{"query", "documents", "top_n", "return_documents"}`
  -> `{"results": [{"index", "relevance_score"[, "document"]}], ...}`, so their clients work unchanged;
- `GET /health`, `GET /metrics` (Prometheus).

Input is bounded before any model code runs: request bytes (413), number of documents (413), text lengths and an
empty query (422); every error is JSON `{"error", "error_type"}`. Requests that arrive together are scored together:
one worker thread takes every request waiting (up to `max_batch_documents`), so MICE encodes the documents they share
once, and the model never runs two batches at a time.

(No `from __future__ import annotations` here: FastAPI reads the request models of `create_app`'s local endpoints
from their annotations at run time.)
"""

import asyncio
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field, StringConstraints


@dataclass
class ServerSettings:
    """Limits and batching of the app.

    Attributes:
        model_name: reported by `/health` and in Cohere/Jina responses.
        max_documents: most documents in one request (more: 413).
        max_text_chars: longest query or document, in characters (longer: 422).
        max_request_bytes: largest request body (larger: 413).
        max_batch_documents: most documents the worker scores in one go across waiting requests.
    """

    model_name: str = "mice"
    max_documents: int = 1000
    max_text_chars: int = 100_000
    max_request_bytes: int = 8 << 20
    max_batch_documents: int = 2048


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "error_type": error_type})


class _BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before the app sees it (declared by
    `content-length` or counted while it streams in; a body within the limit is then replayed to the app)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _error(
            413, "payload_too_large", f"request body over {self.limit} bytes; send fewer or shorter texts"
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        messages, received = [], 0
        while True:
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            if received > self.limit:
                return await too_large(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


class _Batcher:
    """One worker thread scoring the requests that wait together in one `score_many` call."""

    def __init__(self, reranker, max_documents: int, batch_sizes: Histogram):
        self.reranker = reranker
        self.max_documents = max_documents
        self.batch_sizes = batch_sizes
        self.waiting: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True, name="rerank-worker").start()

    async def score(self, query: str, documents: list[str]):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.put((query, documents, loop, future))
        return await future

    def _work(self) -> None:
        while True:
            batch = [self.waiting.get()]
            size = len(batch[0][1])
            while size < self.max_documents:
                try:
                    item = self.waiting.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                size += len(item[1])
            self.batch_sizes.observe(len(batch))
            try:
                results = self.reranker.score_many([(query, documents) for query, documents, _, _ in batch])
                outcomes = [
                    (future.set_result, result) for (_, _, _, future), result in zip(batch, results, strict=True)
                ]
            except Exception as error:  # the requests fail, the worker keeps serving
                outcomes = [(future.set_exception, error) for _, _, _, future in batch]
            for (_, _, loop, _), (settle, value) in zip(batch, outcomes, strict=True):
                loop.call_soon_threadsafe(_settle, settle, value)


def _settle(settle, value) -> None:
    try:
        settle(value)
    except asyncio.InvalidStateError:  # the client went away and the future was cancelled
        pass


def _read(cache, attribute: str) -> float:
    value = getattr(cache, attribute)
    return value() if callable(value) else value


def _sigmoid(score: float) -> float:
    return 1.0 / (1.0 + math.exp(-score)) if score >= 0 else math.exp(score) / (1.0 + math.exp(score))


def create_app(reranker, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app serving `reranker` (any `serving.rerankers.Reranker`) within `settings`' limits."""
    settings = settings or ServerSettings()
    Text = Annotated[str, StringConstraints(max_length=settings.max_text_chars)]
    Query = Annotated[str, StringConstraints(min_length=1, max_length=settings.max_text_chars, strip_whitespace=True)]

    class TeiRequest(BaseModel):
        query: Query
        texts: list[Text] = Field(min_length=1)
        raw_scores: bool = False
        return_text: bool = False
        truncate: bool = True

    class DocumentText(BaseModel):
        text: Text

    class RerankRequest(BaseModel):
        model: str | None = None
        query: Query
        documents: list[Text | DocumentText] = Field(min_length=1)
        top_n: int | None = Field(default=None, ge=1)
        return_documents: bool = False

    registry = CollectorRegistry()
    requests = Counter("rerank_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=registry)
    documents_scored = Counter("rerank_documents", "Documents scored", registry=registry)
    latency = Histogram("rerank_request_seconds", "Time to answer a re-ranking request", registry=registry)
    batch_sizes = Histogram(
        "rerank_batch_requests", "Requests scored together", buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry
    )
    cache = getattr(reranker, "cache", None)
    if cache is not None:
        for name, attribute in (("hits", "hits"), ("misses", "misses"), ("documents", "__len__")):
            gauge = Gauge(f"rerank_document_cache_{name}", f"Document-state cache {name}", registry=registry)
            gauge.set_function(lambda attribute=attribute: _read(cache, attribute))
    batcher = _Batcher(reranker, settings.max_batch_documents, batch_sizes)

    app = FastAPI(title="mice-rerank", description="Re-ranking with MICE or a cross-encoder")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'body'}: {problem['msg']}"
            for problem in error.errors()
        )
        requests.labels(request.url.path, "422").inc()
        return _error(422, "validation", problems[:1000])

    async def scores(endpoint: str, query: str, texts: list[str]):
        if len(texts) > settings.max_documents:
            requests.labels(endpoint, "413").inc()
            return _error(
                413, "too_many_documents", f"{len(texts)} documents; at most {settings.max_documents} per request"
            )
        start = time.perf_counter()
        values = await batcher.score(query, texts)
        latency.observe(time.perf_counter() - start)
        documents_scored.inc(len(texts))
        requests.labels(endpoint, "200").inc()
        return values

    @app.post("/rerank")
    async def rerank_tei(body: TeiRequest):
        values = await scores("/rerank", body.query, body.texts)
        if isinstance(values, JSONResponse):
            return values
        order = sorted(range(len(values)), key=lambda i: -values[i])
        results = []
        for index in order:
            score = float(values[index])
            item = {"index": index, "score": score if body.raw_scores else _sigmoid(score)}
            if body.return_text:
                item["text"] = body.texts[index]
            results.append(item)
        return results

    async def rerank_cohere(body: RerankRequest, endpoint: str):
        texts = [document if isinstance(document, str) else document.text for document in body.documents]
        values = await scores(endpoint, body.query, texts)
        if isinstance(values, JSONResponse):
            return values
        order = sorted(range(len(values)), key=lambda i: -values[i])[: body.top_n]
        results = []
        for index in order:
            item = {"index": index, "relevance_score": _sigmoid(float(values[index]))}
            if body.return_documents:
                item["document"] = {"text": texts[index]}
            results.append(item)
        return {
            "model": body.model or settings.model_name,
            "results": results,
            "meta": {"api_version": {"version": "2"}},
        }

    @app.post("/v1/rerank")
    async def rerank_v1(body: RerankRequest):
        return await rerank_cohere(body, "/v1/rerank")

    @app.post("/v2/rerank")
    async def rerank_v2(body: RerankRequest):
        return await rerank_cohere(body, "/v2/rerank")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_name, "kind": getattr(reranker, "kind", "reranker")}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_BodyLimit, limit=settings.max_request_bytes)
    return app
