"""A bounded load test of `mice serve` on 127.0.0.1: MICE with its document cache, the same with the cache off, and a
cross-encoder served the same way, each on the same workload; then malformed and oversized requests.

Each server is started as `mice serve` (a subprocess on a free local port) and stopped afterwards. The workload is
`--requests` TEI-style `/rerank` requests of `--documents` texts each, `--concurrency` at a time; a fraction
`--repeated` of each request's documents come from a small pool shared by all requests (the documents a search engine
returns again and again), the rest are new. Texts are documents of a BEIR folder (default: the packaged Debian
sample). Prints one JSON line: per server, throughput (requests/s, documents/s) and p50/p95 latency, and the status
and error of each bad request with the status of a good request sent right after it.

    python scripts/bench_serve.py --mice MICE_FOLDER --mice-backend onnx-int8 --cross-encoder CE_FOLDER
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "mice_rerank" / "sample_data" / "debian" / "corpus.jsonl"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def workload(texts: list[str], args) -> list[tuple[str, list[str]]]:
    rng = random.Random(args.seed)
    rng.shuffle(texts)
    repeated = max(1, round(args.documents * args.repeated))
    pool, fresh = texts[: args.documents * 2], iter(texts[args.documents * 2 :])
    requests = []
    for index in range(args.requests):
        documents = rng.sample(pool, repeated) + [next(fresh) for _ in range(args.documents - repeated)]
        requests.append((f"query {index} " + " ".join(rng.choice(pool).split()[:6]), documents))
    return requests


async def drive(url: str, requests, concurrency: int) -> dict:
    latencies = []
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(query, documents):
            async with limit:
                start = time.perf_counter()
                answer = await client.post("/rerank", json={"query": query, "texts": documents})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(one(query, documents) for query, documents in requests))
        elapsed = time.perf_counter() - start
    values = 1000 * np.asarray(latencies)
    documents = sum(len(d) for _, d in requests)
    return {
        "requests": len(requests),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(requests) / elapsed, 2),
        "documents_per_s": round(documents / elapsed, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
    }


def bad_requests(url: str) -> list[dict]:
    """Each bad request's status and error, and the status of a good request sent right after it."""
    good = {"query": "editor", "texts": ["a text editor", "a web browser"]}
    cases = {
        "malformed JSON": b'{"query": "editor", "texts": [',
        "empty query": json.dumps({"query": "", "texts": ["a text editor"]}).encode(),
        "10,000 documents": json.dumps({"query": "editor", "texts": ["a text editor"] * 10_000}).encode(),
        "10 MB text": json.dumps({"query": "editor", "texts": ["x" * 10_000_000]}).encode(),
    }
    results = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for name, body in cases.items():
            answer = client.post("/rerank", content=body, headers={"content-type": "application/json"})
            after = client.post("/rerank", json=good)
            results.append(
                {"case": name, "status": answer.status_code, "error": answer.json(), "next_request": after.status_code}
            )
    return results


def serve(model: str, backend: str, extra: list[str], threads: int | None):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mice_rerank.cli",
        "serve",
        "--model",
        model,
        "--backend",
        backend,
        "--port",
        str(port),
    ]
    command += extra + (["--threads", str(threads)] if threads else [])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"mice serve exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError("mice serve did not answer /health within 5 minutes")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mice", required=True, help="MICE model folder (with onnx/ for the ONNX backends)")
    parser.add_argument("--mice-backend", default="torch", choices=("torch", "onnx", "onnx-int8", "onnx-int8-query"))
    parser.add_argument("--cross-encoder", required=True, help="cross-encoder folder with onnx/ (served int8)")
    parser.add_argument("--corpus", type=Path, default=SAMPLE, help="corpus.jsonl the texts come from")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--documents", type=int, default=20, help="documents per request")
    parser.add_argument("--repeated", type=float, default=0.8, help="fraction of each request's documents repeated")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, help="model threads of each server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the JSON line here")
    args = parser.parse_args(argv)
    texts = [json.loads(line)["text"] for line in args.corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    fresh = args.documents - max(1, round(args.documents * args.repeated))
    needed = args.documents * 2 + (args.requests + 2) * fresh
    if len(texts) < needed:
        parser.error(f"{args.corpus} has {len(texts)} documents; this workload needs {needed}")
    args.requests += 2
    requests = workload(texts, args)
    args.requests -= 2
    warmup, requests = requests[-2:], requests[:-2]  # its own new documents: the measured run finds none cached
    servers = {
        f"mice/{args.mice_backend}": (args.mice, args.mice_backend, []),
        f"mice/{args.mice_backend} cache off": (args.mice, args.mice_backend, ["--cache-documents", "0"]),
        "cross-encoder/onnx-int8": (args.cross_encoder, "onnx-int8", []),
    }
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "load_before": os.getloadavg(), "servers": {}}
    for name, (model, backend, extra) in servers.items():
        process, url = serve(model, backend, extra, args.threads)
        try:
            asyncio.run(drive(url, warmup, args.concurrency))  # first calls allocate
            report["servers"][name] = asyncio.run(drive(url, requests, args.concurrency))
            if name.startswith("mice") and "cache off" not in name:
                report["bad_requests"] = bad_requests(url)
                report["metrics"] = [
                    line for line in httpx.get(url + "/metrics").text.splitlines() if line.startswith("rerank_document")
                ]
        finally:
            process.terminate()
            process.wait(30)
    report["load_after"] = os.getloadavg()
    line = json.dumps(report)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
