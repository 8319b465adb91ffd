"""The latency benchmark's analytic FLOP counts agree exactly with torch's FlopCounterMode on the models it times.

(Eager attention, because FlopCounterMode does not count the CPU SDPA kernel; the matrix products are the same.)
No timing is tested here: timings are machine- and load-dependent and belong in the benchmark's output.
"""

from __future__ import annotations

import pytest
import torch
from loaders import load_script
from tiny_models import build_tiny_backbone
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from modeling_mice import MiceForSequenceClassification


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_latency")


def counted(function) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def test_analytic_flops_match_flop_counter(bench, tmp_path):
    folder = build_tiny_backbone(tmp_path, "bert", cross_encoder=True, num_hidden_layers=4)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    cross_encoder = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    mice = MiceForSequenceClassification.from_backbone(
        str(folder), fusion_layer=2, interaction_layers=2, attn_implementation="eager"
    ).eval()
    docs, query_words, doc_words = 3, 5, 11
    query = bench.random_texts(tokenizer, 1, query_words, seed=0)[0]
    documents = bench.random_texts(tokenizer, docs, doc_words, seed=1)
    config = cross_encoder.config
    shape = (config.hidden_size, config.intermediate_size, config.num_labels)

    pairs = tokenizer([query] * docs, documents, return_tensors="pt")
    assert pairs["input_ids"].shape[1] == query_words + doc_words + 3
    expected = bench.cross_encoder_flops(docs, query_words + doc_words + 3, config.num_hidden_layers, *shape)
    assert counted(lambda: cross_encoder(**pairs)) == expected

    query_inputs = mice.tokenize_queries(tokenizer, [query])
    document_inputs = mice.tokenize_documents(tokenizer, documents)
    with torch.inference_mode():
        states = mice.encode_documents(**document_inputs)
    lengths = (query_words + 2, doc_words + 2)
    cached = bench.mice_flops(docs, *lengths, 2, 2, *shape, cached=True)
    uncached = bench.mice_flops(docs, *lengths, 2, 2, *shape, cached=False)
    # MICE's lower layers are a BertModel with its pooler, which also pools every sequence it encodes (output unused):
    # 2 * H * H per encoded query or document on top of the work counted above.
    unused_pooler = 2 * config.hidden_size**2
    assert counted(lambda: mice.score(**query_inputs, document_states=states)) == cached + unused_pooler
    assert counted(lambda: mice(**query_inputs, **document_inputs)) == uncached + (1 + docs) * unused_pooler
    assert uncached - cached == docs * 2 * bench.encoder_layer_flops(doc_words + 2, *shape[:2])
    with torch.inference_mode():
        key_values = mice.document_key_values(states)
    key_value_flops = bench.mice_flops(docs, *lengths, 2, 2, *shape, cached=True, key_values=True)
    assert counted(lambda: mice.score(**query_inputs, document_states=key_values)) == key_value_flops + unused_pooler
