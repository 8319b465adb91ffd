"""Build a teacher-score dataset from a BEIR folder: mine candidates, score them with a teacher, save three configs.

Examples:
    # the offline teacher (BM25 + all-MiniLM-L6-v2, per-query min-max) on BM25 top-30 candidates
    python scripts/build_teacher_dataset.py --beir mice_rerank/sample_data/debian --split train \\
        --depth 30 --teacher offline --output teacher_dataset

    # a Hub cross-encoder and a bi-encoder, weighted 2:1, on a first-stage run file
    python scripts/build_teacher_dataset.py --beir data/msmarco --split train --run colbert.run --depth 100 \\
        --teacher cross-encoder:cross-encoder/ms-marco-MiniLM-L12-v2 --teacher bi-encoder:PATH --weights 2 1 \\
        --output kd

    # how good is the teacher? re-rank the first stage of the test split and compare (ir-measures)
    python scripts/build_teacher_dataset.py --beir mice_rerank/sample_data/debian --teacher offline \\
        --depth 100 --evaluate-split test

Finished batches are kept in ``OUTPUT.partial/``; running the same command again after an interruption resumes
from them (``--no-resume`` starts over). The folder is removed once the dataset is saved.
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm.auto import tqdm

from ranking_data.beir import BeirData, load_beir
from ranking_data.bm25 import BM25Retriever
from ranking_data.candidates import candidates_from_run_file, mine_bm25_candidates
from ranking_data.teacher_data import build_from_beir
from ranking_data.teachers import (
    BiEncoderTeacher,
    BM25Teacher,
    CrossEncoderTeacher,
    EnsembleTeacher,
    MiceTeacher,
    Teacher,
    offline_teacher,
)

TEACHER_HELP = (
    "a teacher, repeatable for an ensemble: 'offline' (BM25 + packaged all-MiniLM-L6-v2), 'bm25', "
    "'bi-encoder:PATH_OR_ID', 'cross-encoder:PATH_OR_ID', 'mice:PATH'"
)


def make_teacher(spec: str, retriever: BM25Retriever, batch_size: int, device: str | None) -> Teacher:
    """One teacher from its command-line spec."""
    kind, _, path = spec.partition(":")
    if kind == "offline" and not path:
        return offline_teacher(retriever, batch_size=batch_size, device=device)
    if kind == "bm25" and not path:
        return BM25Teacher(retriever)
    if kind == "bi-encoder" and path:
        return BiEncoderTeacher(path, batch_size=batch_size, device=device)
    if kind == "cross-encoder" and path:
        return CrossEncoderTeacher(path, batch_size=batch_size, device=device)
    if kind == "mice" and path:
        teacher = MiceTeacher.from_pretrained(path, batch_size=batch_size)
        if device:
            teacher.model.to(device)
        return teacher
    raise SystemExit(f"unknown teacher {spec!r}; {TEACHER_HELP}")


def evaluate(args: argparse.Namespace, data: BeirData, teacher: Teacher, retriever: BM25Retriever) -> dict:
    """nDCG@10 / MRR@10 of the first stage and of the teacher re-ranking it, on a judged split (ir-measures).

    A query with no candidate counts as zero, as in a full evaluation (``evaluation.metrics``).
    """
    from evaluation.metrics import evaluate_run

    # Evaluation must not see the judgements: no positives are added to the candidates.
    candidates = (
        candidates_from_run_file(args.run, data, args.depth, keep_positives=False)
        if args.run
        else mine_bm25_candidates(data, args.depth, retriever, keep_positives=False)
    )
    first_stage = {c.query_id: {d: float(args.depth - i) for i, d in enumerate(c.document_ids)} for c in candidates}
    documents = {d: data.document_text(d) for c in candidates for d in c.document_ids}
    reranked = {}
    for start in tqdm(range(0, len(candidates), args.batch_size), desc=f"re-ranking with {teacher.name}"):
        batch = candidates[start : start + args.batch_size]
        scores = teacher.score([data.queries[c.query_id] for c in batch], [c.document_ids for c in batch], documents)
        for candidate, values in zip(batch, scores, strict=True):
            reranked[candidate.query_id] = dict(zip(candidate.document_ids, map(float, values), strict=True))
    metrics = ("ndcg@10", "mrr@10")
    return {
        "split": args.evaluate_split,
        "queries": len(data.qrels),
        "depth": args.depth,
        "first_stage": evaluate_run(data.qrels, first_stage, metrics),
        "teacher": evaluate_run(data.qrels, reranked, metrics),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir", required=True, help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="train", help="qrels split whose queries get candidate lists")
    parser.add_argument("--run", help="first-stage TREC run file; default: BM25 (bm25s) over the corpus")
    parser.add_argument("--depth", type=int, default=100, help="candidates per query (the stored list size)")
    parser.add_argument("--no-positives", action="store_true", help="do not put missed qrels positives in the lists")
    parser.add_argument("--max-queries", type=int, help="use a random sample of N queries of the split (--seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-queries sample")
    parser.add_argument("--teacher", action="append", help=TEACHER_HELP)
    parser.add_argument("--weights", type=float, nargs="+", help="ensemble weights, one per --teacher")
    parser.add_argument(
        "--normalization", choices=["minmax", "zscore"], default="minmax", help="ensemble normalisation"
    )
    parser.add_argument("--output", help="folder for the dataset (DatasetDict: train/, queries/, documents/)")
    parser.add_argument("--batch-size", type=int, default=32, help="queries per scored (and resumable) batch")
    parser.add_argument("--no-resume", action="store_true", help="ignore finished batches of an earlier run")
    parser.add_argument("--device", help="torch device for neural teachers (default: automatic)")
    parser.add_argument("--evaluate-split", help="instead of building, report the teacher's nDCG@10 on this split")
    args = parser.parse_args(argv)
    if not args.output and not args.evaluate_split:
        parser.error("give --output (build a dataset) or --evaluate-split (measure the teacher)")
    specs = args.teacher or ["offline"]
    if args.weights is not None and len(args.weights) != len(specs):
        parser.error(f"--weights has {len(args.weights)} values for {len(specs)} teacher(s)")

    def make_ensemble(retriever: BM25Retriever) -> Teacher:
        teachers = [make_teacher(spec, retriever, args.batch_size, args.device) for spec in specs]
        if len(teachers) == 1 and args.weights is None:
            return teachers[0]
        return EnsembleTeacher(teachers, args.weights, args.normalization)

    if args.evaluate_split:
        data = load_beir(args.beir, args.evaluate_split)
        retriever = BM25Retriever().index(data.corpus)
        print(json.dumps(evaluate(args, data, make_ensemble(retriever), retriever), indent=2))
        return 0

    dataset = build_from_beir(
        args.beir,
        args.output,
        split=args.split,
        teacher=make_ensemble,
        depth=args.depth,
        run_file=args.run,
        keep_positives=not args.no_positives,
        max_queries=args.max_queries,
        seed=args.seed,
        batch_size=args.batch_size,
        resume=not args.no_resume,
    )
    print(f"saved {len(dataset.train)} lists, {len(dataset.documents)} documents to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
