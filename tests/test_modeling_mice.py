"""MICE model: entry points, exactness against the backbone, batching, masks, conversion, bad input."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny_backbone
from transformers import AutoModel, AutoTokenizer, GPT2Config

from modeling_mice import MiceConfig, MiceDocumentStates, MiceForSequenceClassification

FAMILIES = ["bert", "roberta", "electra", "mpnet", "deberta-v2", "deberta-v3", "modernbert"]

QUERIES = ["what is a cat", "how do dogs bark", ""]
DOCUMENTS = [
    "a cat is a small domesticated animal that purrs and sleeps most of the day",
    "dogs bark",
    "",
    "the weather in paris is mild in spring, with rain showers and sunny afternoons",
    "barking is how dogs talk to each other",
    "cats",
]
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {family: build_tiny_backbone(root, family, cross_encoder=True) for family in FAMILIES}


@pytest.fixture(scope="module")
def models(backbones):
    built = {}
    for family, folder in backbones.items():
        torch.manual_seed(0)
        model = MiceForSequenceClassification.from_backbone(str(folder), fusion_layer=2, interaction_layers=2).eval()
        built[family] = (model, AutoTokenizer.from_pretrained(folder))
    return built


def pairs(queries, documents):
    """Each query against len(documents) / len(queries) consecutive documents."""
    per_query = len(documents) // len(queries)
    return [q for q in queries for _ in range(per_query)], documents


@pytest.mark.parametrize("family", FAMILIES)
def test_three_entry_points_agree(models, family):
    model, tokenizer = models[family]
    queries, documents = QUERIES, DOCUMENTS  # 3 queries x 2 documents each
    joint_queries, _ = pairs(queries, documents)
    with torch.no_grad():
        joint = model(**tokenizer(joint_queries, documents, padding=True, return_tensors="pt")).logits
        q = model.tokenize_queries(tokenizer, queries)
        d = model.tokenize_documents(tokenizer, documents)
        separate = model(**q, **d).logits
        cached = model.score(**q, document_states=model.encode_documents(**d)).logits
    assert joint.shape == (6, 1)
    assert (joint - separate).abs().max() <= TOL
    assert (joint - cached).abs().max() <= TOL
    # The scores depend on the document: a model that ignored it would score one query's documents alike.
    assert (joint[0] - joint[1]).abs() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_independent_layers_equal_the_backbone(models, backbones, family):
    """A document encoded alone gets exactly the backbone's own hidden_states[fusion_layer] (token type 1)."""
    model, tokenizer = models[family]
    backbone = AutoModel.from_pretrained(
        backbones[family], attn_implementation=model.config._attn_implementation
    ).eval()
    inputs = tokenizer(DOCUMENTS[0], return_tensors="pt")
    if "token_type_ids" in inputs and getattr(backbone.config, "type_vocab_size", 0) > 1:
        inputs["token_type_ids"] = torch.ones_like(inputs["input_ids"])
    else:
        inputs.pop("token_type_ids", None)
    with torch.no_grad():
        reference = backbone(**inputs, output_hidden_states=True).hidden_states[model.config.fusion_layer]
        states = model.encode_documents(**model.tokenize_documents(tokenizer, DOCUMENTS[0]))
    assert torch.equal(states.attention_mask, inputs["attention_mask"])
    assert (states.hidden_states - reference).abs().max() <= 1e-6


@pytest.mark.parametrize("fusion_layer", [2, 1])
@pytest.mark.parametrize("family", FAMILIES)
def test_interaction_layers_are_the_backbone_layers_on_the_query(backbones, family, fusion_layer, monkeypatch):
    """Without cross-attention and without the [CLS] mask, the interaction layers are exactly the backbone's layers
    run on the query alone: same weights, positions (absolute, relative, rotary) and local/global windows. The query is
    longer than ModernBERT's tiny sliding window, so a wrong window would show. With fusion layer 1, ModernBERT's
    independent part is one global layer and the interaction layers include sliding ones."""
    from modeling_mice.modeling_mice import MiceModel

    model = MiceForSequenceClassification.from_backbone(
        str(backbones[family]), fusion_layer=fusion_layer, interaction_layers=4 - fusion_layer, mask_query_to_cls=False
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbones[family])
    backbone = AutoModel.from_pretrained(
        backbones[family], attn_implementation=model.config._attn_implementation
    ).eval()
    assert backbone.config.num_hidden_layers == model.config.kept_layers
    queries = ["what is the small animal that purrs and sleeps all day long", "cat"]
    inputs = tokenizer(queries, padding=True, return_tensors="pt")
    if "token_type_ids" in inputs and getattr(backbone.config, "type_vocab_size", 0) <= 1:
        inputs.pop("token_type_ids")
    monkeypatch.setattr(MiceModel, "_cross_attention", lambda self, layer, cross, hidden, *rest: (hidden, None))
    with torch.no_grad():
        reference = backbone(**inputs).last_hidden_state
        q = model.tokenize_queries(tokenizer, queries)
        d = model.tokenize_documents(tokenizer, DOCUMENTS[:2])
        states = model.mice(**q, **d).last_hidden_state
    valid = inputs["attention_mask"].bool()
    assert inputs["input_ids"].shape[1] > 2 * 4  # longer than the tiny ModernBERT window (4 tokens each side)
    assert (states[valid] - reference[valid]).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_independent_of_batch_and_padding(models, family):
    model, tokenizer = models[family]
    query = model.tokenize_queries(tokenizer, QUERIES[0])
    with torch.no_grad():
        states = model.encode_documents(**model.tokenize_documents(tokenizer, DOCUMENTS))
        together = model.score(**query, document_states=states).logits
        alone = torch.cat(
            [
                model.score(
                    **query, document_states=model.encode_documents(**model.tokenize_documents(tokenizer, d))
                ).logits
                for d in DOCUMENTS
            ]
        )
        # The same documents again, in another order and among others.
        shuffled = model.encode_documents(**model.tokenize_documents(tokenizer, DOCUMENTS[::-1] + ["x " * 40]))
        reordered = model.score(**query, document_states=shuffled).logits[: len(DOCUMENTS)].flip(0)
        # Padded query: the same query in a batch with a longer one.
        two = model.tokenize_queries(tokenizer, [QUERIES[0], "a much longer query with many more words in it"])
        padded = model.score(**two, document_states=MiceDocumentStates.concatenate([states, states])).logits
    assert (together - alone).abs().max() <= TOL
    assert (together - reordered).abs().max() <= TOL
    assert (together - padded[: len(DOCUMENTS)]).abs().max() <= TOL


def test_padding_is_never_projected_and_the_first_self_attention_runs_once_per_query(models):
    """The cross-attention keys/values and the feed-forward see only the valid tokens (their counts, by hand), and the
    first interaction layer's self-attention sees each query once, not once per document."""
    model, tokenizer = models["bert"]
    queries, documents = QUERIES[:2], DOCUMENTS[:4]  # 2 queries x 2 documents
    q = model.tokenize_queries(tokenizer, queries)
    d = model.tokenize_documents(tokenizer, documents)
    seen: dict[str, list[tuple[int, ...]]] = {"key": [], "ffn": [], "self": []}
    first = model.mice.interaction[0]
    hooks = [
        model.mice.cross_attention[0].self.key.register_forward_hook(lambda m, i, o: seen["key"].append(i[0].shape)),
        first.intermediate.register_forward_hook(lambda m, i, o: seen["ffn"].append(i[0].shape)),
        first.attention.register_forward_hook(lambda m, i, o: seen["self"].append(i[0].shape)),
    ]
    with torch.no_grad():
        model(**q, **d)
    for hook in hooks:
        hook.remove()
    document_tokens = int(d["document_attention_mask"].sum())
    query_tokens_per_pair = int(q["query_attention_mask"].sum(dim=1).repeat_interleave(2).sum())
    assert seen["key"] == [(document_tokens, model.config.encoder_config.hidden_size)]
    assert seen["ffn"] == [(query_tokens_per_pair, model.config.encoder_config.hidden_size)]
    assert seen["self"][0][0] == len(queries)
    assert document_tokens < d["document_attention_mask"].numel()  # the batch does hold padding


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mask_cls_to_doc", [True, False])
def test_last_layer_computed_for_cls_only(backbones, family, mask_cls_to_doc):
    """The classifier computes only the [CLS] row of the last interaction layer; the scores equal those read from the
    full final query states."""
    model = MiceForSequenceClassification.from_backbone(
        str(backbones[family]), fusion_layer=2, interaction_layers=2, mask_cls_to_doc=mask_cls_to_doc
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbones[family])
    q = model.tokenize_queries(tokenizer, QUERIES)
    d = model.tokenize_documents(tokenizer, DOCUMENTS)
    with torch.no_grad():
        states = model.encode_documents(**d)
        full = model.mice.interact(model.mice.encode_queries(**q), q["query_attention_mask"], states)
        fast = model.mice.interact(model.mice.encode_queries(**q), q["query_attention_mask"], states, only_cls=True)
        scores = model.score(**q, document_states=states).logits
    assert fast.last_hidden_state.shape == (len(DOCUMENTS), 1, model.config.encoder_config.hidden_size)
    assert (fast.last_hidden_state[:, 0] - full.last_hidden_state[:, 0]).abs().max() <= 1e-5
    assert (scores - model._logits(full).logits).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_attentions(models, family):
    """Shape (N, heads, Lq, Ld); the [CLS] row and padding rows are zero, other rows are distributions over the
    document's own tokens."""
    model, tokenizer = models[family]
    q = model.tokenize_queries(tokenizer, ["what is a cat", "dogs"])
    d = model.tokenize_documents(tokenizer, DOCUMENTS[:4])
    with torch.no_grad():
        out = model(**q, **d, output_attentions=True)
        plain = model(**q, **d).logits
    assert torch.allclose(out.logits, plain, atol=TOL)
    heads = model.config.encoder_config.num_attention_heads
    query_mask = q["query_attention_mask"].repeat_interleave(2, dim=0)
    assert len(out.cross_attentions) == model.config.interaction_layers
    for weights in out.cross_attentions:
        assert weights.shape == (4, heads, q["query_input_ids"].shape[1], d["document_input_ids"].shape[1])
        assert torch.count_nonzero(weights[:, :, 0]) == 0  # mask_cls_to_doc
        row_sums = weights.sum(-1)
        expected = query_mask.clone().to(row_sums.dtype)
        expected[:, 0] = 0
        assert torch.allclose(row_sums, expected[:, None, :].expand_as(row_sums), atol=1e-5)
        padding = (d["document_attention_mask"] == 0)[:, None, None, :].expand_as(weights)
        assert torch.count_nonzero(weights[padding]) == 0


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_cls_cross_attention_context_is_exactly_zero(backbones, family, implementation):
    """With mask_cls_to_doc the [CLS] reads no document key: whatever the backend, the context it hands the
    cross-attention's output projection is exactly zero (not an average over the document), and every other valid
    query token's is not."""
    model = MiceForSequenceClassification.from_backbone(
        str(backbones[family]), fusion_layer=2, interaction_layers=2, attn_implementation=implementation
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbones[family])
    cross = model.mice.cross_attention[0]
    projection = cross.Wo if family == "modernbert" else cross.output.dense
    contexts = []
    hook = projection.register_forward_pre_hook(lambda module, args: contexts.append(args[0]))
    q = model.tokenize_queries(tokenizer, QUERIES[:2])
    d = model.tokenize_documents(tokenizer, DOCUMENTS[:4])
    with torch.no_grad():
        model(**q, **d)
    hook.remove()
    lengths = q["query_attention_mask"].sum(dim=1).repeat_interleave(2)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])  # the packed rows of the [CLS]
    (context,) = contexts
    assert context.shape[0] == int(lengths.sum())
    assert torch.count_nonzero(context[starts]) == 0
    others = torch.ones(context.shape[0], dtype=torch.bool)
    others[starts] = False
    assert bool((context[others].abs().sum(dim=-1) > 0).all())


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_flex_attention_agrees(backbones, family, tmp_path, monkeypatch):
    """flex_attention gets transformers' block masks for the query (padding, the [CLS] mask, ModernBERT's local
    windows) and for the documents, and gives sdpa's scores. flex_attention runs uncompiled here: compiling its kernel
    is torch's concern and takes minutes on a CPU."""
    from torch.nn.attention.flex_attention import flex_attention
    from transformers.integrations import flex_attention as transformers_flex

    monkeypatch.setattr(
        transformers_flex,
        "compile_friendly_flex_attention",
        lambda *args, training=False, **kw: flex_attention(*args, **kw),
    )
    sdpa = MiceForSequenceClassification.from_backbone(
        str(backbones[family]), fusion_layer=2, interaction_layers=2, attn_implementation="sdpa"
    ).eval()
    sdpa.save_pretrained(tmp_path / "mice")
    flex = MiceForSequenceClassification.from_pretrained(tmp_path / "mice", attn_implementation="flex_attention").eval()
    assert {flex.config._attn_implementation, flex.mice.backbone.config._attn_implementation} == {"flex_attention"}
    tokenizer = AutoTokenizer.from_pretrained(backbones[family])
    q = sdpa.tokenize_queries(tokenizer, ["what is the small animal that purrs and sleeps all day long", "cat"])
    d = sdpa.tokenize_documents(tokenizer, DOCUMENTS[:4])
    with torch.no_grad():
        difference = (sdpa(**q, **d).logits - flex(**q, **d).logits).abs().max()
    assert difference <= TOL


def test_plain_encoder_source_gets_a_new_head_of_any_size(tmp_path, caplog):
    """An `XModel` source has no head: every `num_labels` builds (2 used to fail, its whole state taken for a head)
    and nothing claims a cross-encoder head was skipped."""
    source = build_tiny_backbone(tmp_path, "bert")
    for num_labels in (1, 2):
        with caplog.at_level("INFO", logger="modeling_mice.modeling_mice"):
            model = MiceForSequenceClassification.from_backbone(
                str(source), fusion_layer=2, interaction_layers=2, num_labels=num_labels
            )
        assert model.classification_head["classifier"].out_features == num_labels
        assert "newly initialized (train them): classification_head" in caplog.text
        assert "source cross-encoder" not in caplog.text
        caplog.clear()


def test_head_and_layers_copied_from_a_cross_encoder(models, backbones):
    """from_backbone copies the embeddings, the kept layers, and the cross-encoder's head; cross-attention is seeded
    from the same layer's self-attention."""
    from transformers import AutoModelForSequenceClassification

    model, _ = models["roberta"]
    source = AutoModelForSequenceClassification.from_pretrained(backbones["roberta"])
    source_state = source.state_dict()
    state = model.state_dict()
    assert torch.equal(
        state["classification_head.classifier.out_proj.weight"], source_state["classifier.out_proj.weight"]
    )
    assert torch.equal(
        state["mice.backbone.embeddings.word_embeddings.weight"],
        source_state["roberta.embeddings.word_embeddings.weight"],
    )
    assert torch.equal(
        state["mice.interaction.1.output.dense.weight"], source_state["roberta.encoder.layer.3.output.dense.weight"]
    )
    assert torch.equal(
        state["mice.cross_attention.0.self.query.weight"],
        source_state["roberta.encoder.layer.2.attention.self.query.weight"],
    )
    assert (
        model.mice.cross_attention[0].self.query.weight.data_ptr()
        != model.mice.interaction[0].attention.self.query.weight.data_ptr()
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_every_parameter(models, family):
    model, tokenizer = models[family]
    model.zero_grad()
    q = model.tokenize_queries(tokenizer, QUERIES[:2])
    d = model.tokenize_documents(tokenizer, DOCUMENTS[:4])
    model(**q, **d, labels=torch.tensor([1.0, 0.0, 0.5, 0.2])).loss.backward()
    without = {name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())}
    model.zero_grad()
    # With pooling="cls" and mask_cls_to_doc, the last interaction layer's cross-attention only updates query tokens
    # that no later layer reads: apart from what it adds to the [CLS] row (output bias and norm in post-norm families)
    # it cannot change the score, as in the paper's model, so its projections get no gradient.
    last = f"mice.cross_attention.{model.config.interaction_layers - 1}."
    assert {name for name in without if not name.startswith(last)} == set()
    assert any(name.startswith(last) for name in without)


@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "mean", "interaction_layers": 1},
        {"mask_query_to_cls": False, "mask_cls_to_doc": False, "interaction_layers": 1},
    ],
)
@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_other_pooling_and_mask_options(backbones, family, options):
    """Mean pooling, or a [CLS] allowed to read the document, make one interaction layer enough: the entry points
    still agree, padding still does not matter, and every parameter (the last cross-attention included) is trained."""
    model = MiceForSequenceClassification.from_backbone(str(backbones[family]), fusion_layer=2, **options).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbones[family])
    q = model.tokenize_queries(tokenizer, QUERIES)
    d = model.tokenize_documents(tokenizer, DOCUMENTS)
    with torch.no_grad():
        joint = model(**tokenizer(*pairs(QUERIES, DOCUMENTS), padding=True, return_tensors="pt")).logits
        separate = model(**q, **d, output_attentions=True)
        alone = model(
            **model.tokenize_queries(tokenizer, QUERIES[0]), **model.tokenize_documents(tokenizer, DOCUMENTS[:2])
        )
    assert (joint - separate.logits).abs().max() <= TOL
    assert (alone.logits - joint[:2]).abs().max() <= TOL
    assert (joint[0] - joint[1]).abs() > 1e-3
    cls_reads_document = bool(torch.count_nonzero(separate.cross_attentions[0][:, :, 0]))
    assert cls_reads_document == (not model.config.mask_cls_to_doc)
    model.train()
    torch.manual_seed(0)
    model(**q, **d, labels=torch.linspace(0, 1, len(DOCUMENTS))).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []


@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "modernbert"])
def test_eager_and_sdpa_agree(backbones, family, tmp_path):
    """Both backends, chosen at conversion or when loading a saved model, reach every layer and give the same scores."""
    tokenizer = AutoTokenizer.from_pretrained(backbones[family])
    inputs = tokenizer(QUERIES[:2] * 3, DOCUMENTS, padding=True, return_tensors="pt")
    sdpa = MiceForSequenceClassification.from_backbone(
        str(backbones[family]), fusion_layer=2, interaction_layers=2, attn_implementation="sdpa"
    ).eval()
    sdpa.save_pretrained(tmp_path / "mice")
    eager = MiceForSequenceClassification.from_pretrained(tmp_path / "mice", attn_implementation="eager").eval()
    for model, implementation in ((sdpa, "sdpa"), (eager, "eager")):
        configs = [model.config, model.config.encoder_config, model.mice.backbone.config]
        configs += [layer.attention.self.config for layer in model.mice.interaction if hasattr(layer, "attention")]
        assert {c._attn_implementation for c in configs} == {implementation}
    with torch.no_grad():
        difference = (sdpa(**inputs).logits - eager(**inputs).logits).abs().max()
    assert difference <= TOL


@pytest.mark.parametrize("family", ["mpnet", "deberta-v3"])
def test_eager_only_families(backbones, family):
    """MPNet and DeBERTa compute attention themselves: MICE defaults to eager and refuses sdpa and flex clearly."""
    model = MiceForSequenceClassification.from_backbone(str(backbones[family]), fusion_layer=2, interaction_layers=2)
    assert model.config._attn_implementation == "eager"
    for implementation in ("sdpa", "flex_attention"):
        with pytest.raises(ValueError, match="supports only attn_implementation='eager'"):
            MiceForSequenceClassification.from_backbone(
                str(backbones[family]), fusion_layer=2, interaction_layers=2, attn_implementation=implementation
            )


def test_flash_attention_is_refused(backbones):
    """Flash-attention cannot express MICE's masks; asking for it is a clear error, not silently wrong scores."""
    with pytest.raises((ValueError, ImportError), match="[Ff]lash"):
        MiceForSequenceClassification.from_backbone(
            str(backbones["bert"]), fusion_layer=2, interaction_layers=2, attn_implementation="flash_attention_2"
        )


# ----------------------------------------------------------------------------------------------------------------------
# Truncation and bad input
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_truncation_is_the_same_on_every_path(backbones, family):
    """Longer texts keep their first tokens and their final separator, whether split from a pair or tokenized apart."""
    model = MiceForSequenceClassification.from_backbone(
        str(backbones[family]), fusion_layer=2, interaction_layers=2, max_query_length=6, max_document_length=12
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbones[family])
    long_query = "a very long query about cats and dogs and birds and fish"
    with torch.no_grad():
        q = model.tokenize_queries(tokenizer, [long_query, "cat"])
        d = model.tokenize_documents(tokenizer, [DOCUMENTS[3], DOCUMENTS[0]])
        separate = model(**q, **d).logits
        joint_inputs = tokenizer([long_query, "cat"], [DOCUMENTS[3], DOCUMENTS[0]], padding=True, return_tensors="pt")
        split = model.mice.split_pairs(**joint_inputs)
        joint = model(**joint_inputs).logits
    assert q["query_input_ids"].shape[1] == 6 and d["document_input_ids"].shape[1] == 12
    assert q["query_input_ids"][0, -1] == tokenizer.sep_token_id
    for key in q | d:
        assert torch.equal(split[key], (q | d)[key]), key
    assert (separate - joint).abs().max() <= TOL
    too_long = model.tokenize_documents(tokenizer, DOCUMENTS[0])
    too_long = {k: torch.cat([v, v], dim=1) for k, v in too_long.items()}
    with pytest.raises(ValueError, match="max_document_length"):
        model.encode_documents(**too_long)


def test_empty_texts_are_scored_as_special_tokens_only(models):
    model, tokenizer = models["bert"]
    q = model.tokenize_queries(tokenizer, [""])
    d = model.tokenize_documents(tokenizer, [""])
    assert q["query_input_ids"].tolist() == [[tokenizer.cls_token_id, tokenizer.sep_token_id]]
    assert d["document_input_ids"].tolist() == [[tokenizer.cls_token_id, tokenizer.sep_token_id]]
    with torch.no_grad():
        joint = model(**tokenizer([""], [""], return_tensors="pt")).logits
        separate = model(**q, **d).logits
    assert torch.isfinite(joint).all() and (joint - separate).abs().max() <= TOL


def test_bad_inputs_raise_clear_errors(models):
    model, tokenizer = models["bert"]
    q = model.tokenize_queries(tokenizer, QUERIES[:2])
    d = model.tokenize_documents(tokenizer, DOCUMENTS[:4])
    states = model.encode_documents(**d)
    with pytest.raises(ValueError, match="no documents"):
        model.tokenize_documents(tokenizer, [])
    with pytest.raises(ValueError, match="no documents"):
        model.score(**q, document_states=states[0:0])
    with pytest.raises(ValueError, match="no documents"):
        model(**q)
    with pytest.raises(ValueError, match="multiple of the number of queries"):
        model.score(**q, document_states=states[0:3])
    with pytest.raises(ValueError, match="multiple of the number of queries"):
        model(**q, **{k: v[:3] for k, v in d.items()})
    wrong_size = MiceDocumentStates(torch.zeros(4, 5, 16), torch.ones(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="width 16"):
        model.score(**q, document_states=wrong_size)
    with pytest.raises(TypeError, match="MiceDocumentStates"):
        model.score(**q, document_states=states.hidden_states)
    with pytest.raises(ValueError, match="disagree"):
        MiceDocumentStates(torch.zeros(4, 5, 32), torch.ones(3, 5))
    left = tokenizer(["cat", "a longer query"], padding=True, return_tensors="pt", padding_side="left")
    with pytest.raises(ValueError, match="right-padded"):
        model.score(left["input_ids"], left["attention_mask"], states)
    with pytest.raises(ValueError, match="not \\(query, document\\) pairs|separator"):
        model(**tokenizer(["just one text"], return_tensors="pt", return_token_type_ids=False))
    with pytest.raises(TypeError, match="strings"):
        model.tokenize_queries(tokenizer, ["ok", None])
    with pytest.raises(ValueError, match="both"):
        model(input_ids=q["query_input_ids"], query_input_ids=q["query_input_ids"])


def test_invalid_configurations_raise_clear_errors(backbones):
    bert = AutoModel.from_pretrained(backbones["bert"]).config.to_dict()
    with pytest.raises(ValueError, match="exceeds the 4 layers"):
        MiceConfig(encoder_config=bert, fusion_layer=3, interaction_layers=2)
    with pytest.raises(ValueError, match="at least one interaction layer"):
        MiceConfig(encoder_config=bert, fusion_layer=2, interaction_layers=0)
    with pytest.raises(ValueError, match="fusion_layer >= 1"):
        MiceConfig(encoder_config=bert, fusion_layer=0, interaction_layers=2)
    with pytest.raises(ValueError, match="without reading the document"):
        MiceConfig(encoder_config=bert, fusion_layer=2, interaction_layers=1)
    MiceConfig(encoder_config=bert, fusion_layer=2, interaction_layers=1, pooling="mean")
    with pytest.raises(ValueError, match="does not support encoders of type 'gpt2'"):
        MiceConfig(encoder_config=GPT2Config(n_layer=4).to_dict(), fusion_layer=2, interaction_layers=2)
    with pytest.raises(ValueError, match="max_query_length"):
        MiceConfig(encoder_config=bert, fusion_layer=2, interaction_layers=2, max_query_length=100_000)
    with pytest.raises(ValueError, match="pooling"):
        MiceConfig(encoder_config=bert, fusion_layer=2, interaction_layers=2, pooling="max")


def test_unsupported_backbone_folder(tmp_path):
    from transformers import GPT2Model

    GPT2Model(GPT2Config(n_layer=4, n_embd=32, n_head=4, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="does not support encoders of type 'gpt2'"):
        MiceForSequenceClassification.from_backbone(str(tmp_path / "gpt2"), fusion_layer=2, interaction_layers=2)


def test_parameter_count_of_minilm_l12_l4_plus_3():
    """MICE-ℓ4+3 on MiniLM-L12-H384 has the paper's 26.3M parameters: embeddings, 7 kept layers, 3 cross-attention
    blocks (Q, K, V, O and their LayerNorm), the pooler and a one-label classifier."""
    from transformers import BertConfig

    hidden, inner, vocab, positions = 384, 1536, 30522, 512
    encoder = BertConfig(
        hidden_size=hidden, num_hidden_layers=12, num_attention_heads=12, intermediate_size=inner, vocab_size=vocab
    )
    model = MiceForSequenceClassification(
        MiceConfig(encoder_config=encoder.to_dict(), fusion_layer=4, interaction_layers=3)
    )
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
    norm = 2 * hidden
    embeddings = (vocab + positions + 2) * hidden + norm
    attention = 4 * linear(hidden, hidden) + norm
    layer = attention + linear(hidden, inner) + linear(inner, hidden) + norm
    expected = embeddings + 7 * layer + 3 * attention + linear(hidden, hidden) + linear(hidden, 1)
    assert model.num_parameters() == expected == 26_264_449
    assert model.config.dropped_layers == [7, 8, 9, 10, 11]


# ----------------------------------------------------------------------------------------------------------------------
# The real MiniLM
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.real_model
def test_real_minilm(minilm_path):
    """all-MiniLM-L6-v2 as MICE-ℓ3+2: lower layers equal the backbone's, the three entry points agree."""
    model = MiceForSequenceClassification.from_backbone(minilm_path, fusion_layer=3, interaction_layers=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    backbone = AutoModel.from_pretrained(minilm_path).eval()
    assert model.config.dropped_layers == [5]
    with torch.no_grad():
        inputs = tokenizer(DOCUMENTS[0], return_tensors="pt")
        inputs["token_type_ids"] = torch.ones_like(inputs["input_ids"])
        reference = backbone(**inputs, output_hidden_states=True).hidden_states[3]
        d = model.tokenize_documents(tokenizer, DOCUMENTS)
        states = model.encode_documents(**d)
        assert (states[0].hidden_states[:, : reference.shape[1]] - reference).abs().max() <= 1e-5
        q = model.tokenize_queries(tokenizer, QUERIES)
        joint_queries, _ = pairs(QUERIES, DOCUMENTS)
        joint = model(**tokenizer(joint_queries, DOCUMENTS, padding=True, truncation=True, return_tensors="pt")).logits
        separate = model(**q, **d).logits
        cached = model.score(**q, document_states=states).logits
    assert (joint - separate).abs().max() <= TOL and (joint - cached).abs().max() <= TOL
