"""The documents to index: a BEIR folder's ``corpus.jsonl``, or a bare ``corpus.jsonl``, in file order."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ranking_data.beir import BeirFormatError, read_jsonl


@dataclass(frozen=True)
class Corpus:
    """Document ids and the texts a model reads (``title + " " + text``, as ``BeirData.document_text``)."""

    source: Path
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """Digest of the ids and texts in order: a resumed build checks that the corpus is the one it started on."""
        digest = hashlib.blake2b(digest_size=16)
        for doc_id, text in zip(self.ids, self.texts, strict=True):
            digest.update(doc_id.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0")
        return digest.hexdigest()


def load_corpus(path: str | Path) -> Corpus:
    """Read ``path`` (a BEIR folder or a ``corpus.jsonl`` file of ``{"_id", "title"?, "text"}`` records).

    Raises:
        BeirFormatError: the file is missing or malformed, or repeats a document id (named with its line numbers).
    """
    path = Path(path)
    file = path / "corpus.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise BeirFormatError(
            f"{path} is neither a BEIR folder (with corpus.jsonl) nor a corpus.jsonl file of "
            '{"_id", "title", "text"} records'
        )
    records = read_jsonl(file, ("_id", "text"), unique="_id")
    ids = [str(record["_id"]) for record in records]
    texts = [f"{record.get('title') or ''} {record['text'] or ''}".strip() for record in records]
    return Corpus(file, ids, texts)
