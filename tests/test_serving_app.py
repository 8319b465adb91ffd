"""The `/rerank` app: TEI and Cohere/Jina shapes, bounded input answered with JSON 4xx, batching, health, metrics."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from tiny_models import build_tiny_backbone
from transformers import AutoTokenizer

from modeling_mice import MiceForSequenceClassification
from serving.app import ServerSettings, create_app
from serving.rerankers import load_reranker

QUERY = "how do dogs bark"
DOCUMENTS = ["a cat is a small animal that purrs", "dogs bark", "the weather in paris is mild", "barking dogs"]
SETTINGS = ServerSettings(model_name="tiny", max_documents=50, max_text_chars=2000, max_request_bytes=64_000)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    backbone = build_tiny_backbone(root, "bert", cross_encoder=True)
    model = MiceForSequenceClassification.from_backbone(str(backbone), fusion_layer=2, interaction_layers=2)
    model.save_pretrained(root / "mice")
    AutoTokenizer.from_pretrained(backbone).save_pretrained(root / "mice")
    return load_reranker(root / "mice", "torch")


@pytest.fixture
def client(reranker):
    with TestClient(create_app(reranker, SETTINGS)) as client:
        yield client


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_tei_shape(client, reranker):
    raw = reranker.score(QUERY, DOCUMENTS)
    answer = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert answer.status_code == 200
    results = answer.json()
    assert [r["index"] for r in results] == list(np.argsort(-raw, kind="stable"))
    for result in results:
        assert result["score"] == pytest.approx(sigmoid(raw[result["index"]]), abs=1e-6)
        assert result["text"] == DOCUMENTS[result["index"]]
    raw_results = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True}).json()
    assert {r["index"]: r["score"] for r in raw_results} == pytest.approx(dict(enumerate(raw.tolist())), abs=1e-6)
    assert "text" not in raw_results[0]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_cohere_jina_shape(client, reranker, path):
    raw = reranker.score(QUERY, DOCUMENTS)
    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, *DOCUMENTS[2:]]
    body = {"model": "x", "query": QUERY, "documents": documents, "top_n": 2, "return_documents": True}
    answer = client.post(path, json=body).json()
    assert [r["index"] for r in answer["results"]] == list(np.argsort(-raw, kind="stable")[:2])
    first = answer["results"][0]
    assert first["relevance_score"] == pytest.approx(sigmoid(raw[first["index"]]), abs=1e-6)
    assert first["document"] == {"text": DOCUMENTS[first["index"]]}


def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(client):
    cases = [
        (b"{not json", 422, "validation"),
        (json.dumps({"query": "   ", "texts": DOCUMENTS}).encode(), 422, "validation"),
        (json.dumps({"query": QUERY, "texts": []}).encode(), 422, "validation"),
        (json.dumps({"query": QUERY, "texts": ["a"] * 10_000}).encode(), 413, "too_many_documents"),
        (json.dumps({"query": QUERY, "texts": ["x" * 10_000_000]}).encode(), 413, "payload_too_large"),
        (json.dumps({"query": QUERY, "texts": ["x" * 3000]}).encode(), 422, "validation"),
        (json.dumps({"query": QUERY, "texts": [3]}).encode(), 422, "validation"),
    ]
    for body, status, kind in cases:
        answer = client.post("/rerank", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status, (body[:60], answer.text[:200])
        assert answer.json()["error_type"] == kind and answer.json()["error"]
        assert client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS}).status_code == 200
    chunked = client.post("/rerank", content=iter([b'{"query": "q", "texts": ["', b"x" * 70_000, b'"]}']))
    assert chunked.status_code == 413


def test_health_and_metrics(client):
    assert client.get("/health").json() == {"status": "ok", "model": "tiny", "kind": "mice"}
    client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS})
    client.post("/rerank", json={"query": "", "texts": DOCUMENTS})
    metrics = client.get("/metrics").text
    assert 'rerank_requests_total{endpoint="/rerank",status="200"}' in metrics
    assert 'rerank_requests_total{endpoint="/rerank",status="422"}' in metrics
    assert "rerank_document_cache_hits" in metrics and "rerank_request_seconds_count" in metrics


def test_concurrent_requests_are_batched_and_answered_alike(reranker):
    """Requests that wait while the model is busy are scored in one call, each getting its own scores."""
    expected = {query: reranker.score(query, DOCUMENTS) for query in ("cats", "dogs", "paris", "weather", "rain")}
    calls = []
    score_many = reranker.score_many
    gate = threading.Event()

    def slow_score_many(requests):
        calls.append(len(requests))
        gate.wait(5)
        return score_many(requests)

    reranker.score_many = slow_score_many
    try:
        app = create_app(reranker, SETTINGS)

        async def run():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

                def post(query):
                    return asyncio.create_task(
                        http.post("/rerank", json={"query": query, "texts": DOCUMENTS, "raw_scores": True})
                    )

                # The first request must be on the worker before the others arrive, or all five form one batch.
                first, *rest = expected
                tasks = [post(first)]
                deadline = time.perf_counter() + 10
                while not calls and time.perf_counter() < deadline:
                    await asyncio.sleep(0.01)
                tasks += [post(query) for query in rest]
                await asyncio.sleep(0.5)
                gate.set()
                return await asyncio.gather(*tasks)

        start = time.perf_counter()
        answers = asyncio.run(run())
    finally:
        reranker.score_many = score_many
    assert time.perf_counter() - start < 30
    assert calls[0] == 1 and sum(calls) == len(expected) and len(calls) < len(expected), calls
    for query, answer in zip(expected, answers, strict=True):
        got = {r["index"]: r["score"] for r in answer.json()}
        assert got == pytest.approx(dict(enumerate(expected[query].tolist())), abs=1e-6)
