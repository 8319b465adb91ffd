"""The masked cross-encoder (Mask0-Mask3 of the MICE paper) and its use as an oracle for MICE's lower layers.

What is compared with MICE, and why only that: with query and document fully separated below the fusion layer
(preset ``separate-l{k}``) and a MICE-style input ``[CLS] q [SEP] [CLS] d [SEP]`` in which the document half restarts
its positions and has token type 1 (as if tokenized alone, which is how MICE encodes it), the masked cross-encoder's
hidden states after layer ``k - 1`` equal MICE's query states (``encode_queries``) and document states
(``encode_documents``) token for token. Above the fusion layer the two compute different functions: a MICE interaction
layer runs a softmax over the query (self-attention) and a second, separate softmax over the frozen document states
(cross-attention with its own weights), and never updates the document, while a masked layer has one softmax over all
allowed keys and keeps updating the document tokens. No attention mask turns one into the other, so scores are not
compared; the interaction layers are covered by the MICE model's own tests.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny_backbone
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from modeling_mice import MiceForSequenceClassification
from modeling_mice.masking import (
    GROUPS,
    PAD_GROUP,
    AttentionRule,
    MaskedCrossEncoder,
    layer_attention_masks,
    mask_rules,
    score_with_mask,
    token_groups,
)

CLS, SEP, PAD = 101, 102, 0
# [CLS] q1 q2 [SEP] d1 d2 [SEP] [PAD]
PAIR = torch.tensor([[CLS, 7, 8, SEP, 9, 10, SEP, PAD]])
PAIR_MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
C, Q, S1, D, S2 = range(5)


def matrix(*rows: str) -> torch.Tensor:
    return torch.tensor([[char == "1" for char in row.replace(" ", "")] for row in rows])


# Rows: who attends (cls q1 q2 sep1 d1 d2 sep2 pad), columns: to whom. Written by hand from the paper's rules.
MASK0 = matrix(
    "1111111 0",  # [CLS] attends to everything
    "0111110 0",  # query: not to [CLS], not to sep_2
    "0111110 0",
    "0001000 0",  # sep_1: only itself
    "0110111 0",  # document: not to [CLS], not to sep_1
    "0110111 0",
    "0000001 0",  # sep_2: only itself
    "1111111 0",  # padding row: every real token (never read)
)
MASK1 = MASK0.clone()
MASK1[0] = matrix("1111000 0")[0]  # [CLS] no longer sees the document or sep_2
MASK2 = MASK1.clone()
MASK2[4:6] = matrix("0000111 0", "0000111 0")  # the document no longer sees the query
MASK3_LOWER = MASK2.clone()
MASK3_LOWER[1:3] = matrix("0111000 0", "0111000 0")  # the query no longer sees the document (below fusion)
SEPARATE_LOWER = matrix(*["1111000 0"] * 4, *["0000111 0"] * 3, "1111111 0")
FULL = matrix(*["1111111 0"] * 8)


def test_groups_of_bert_and_roberta_pairs():
    assert token_groups(PAIR, PAIR_MASK, SEP).tolist() == [[C, Q, Q, S1, D, D, S2, PAD_GROUP]]
    # RoBERTa: <s> q </s></s> d </s> <pad>; both middle separators are sep_1. Ids: <s>=0, <pad>=1, </s>=2.
    roberta = torch.tensor([[0, 7, 2, 2, 9, 10, 2, 1]])
    assert token_groups(roberta, PAIR_MASK, 2).tolist() == [[C, Q, S1, S1, D, D, S2, PAD_GROUP]]
    # A MICE-style concatenation [CLS] q [SEP] [PAD] [CLS] d [SEP]: the document's [CLS] is a document token.
    mice_style = torch.tensor([[CLS, 7, SEP, PAD, CLS, 9, SEP]])
    mice_mask = torch.tensor([[1, 1, 1, 0, 1, 1, 1]])
    assert token_groups(mice_style, mice_mask, SEP).tolist() == [[C, Q, S1, PAD_GROUP, D, D, S2]]


@pytest.mark.parametrize(
    ("ids", "mask"),
    [
        ([[CLS, 7, 8, SEP]], [[1, 1, 1, 1]]),  # a single text, no document
        ([[CLS, 7, SEP, 8, SEP, 9, SEP]], [[1] * 7]),  # separators not adjacent: three texts
        ([[CLS, 7, SEP, 8, 9, SEP, 10]], [[1] * 7]),  # does not end with a separator
    ],
)
def test_inputs_that_are_not_pairs_are_refused(ids, mask):
    with pytest.raises(ValueError, match="not a jointly tokenized"):
        token_groups(torch.tensor(ids), torch.tensor(mask), SEP)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("none", [FULL] * 4),
        ("mask0", [MASK0] * 4),
        ("mask1", [MASK1] * 4),
        ("mask2", [MASK2] * 4),
        ("mask3-l2", [MASK3_LOWER, MASK3_LOWER, MASK2, MASK2]),
        ("separate-l3", [SEPARATE_LOWER] * 3 + [FULL]),
    ],
)
def test_mask_matrices_by_hand(preset, expected):
    groups = token_groups(PAIR, PAIR_MASK, SEP)
    masks = layer_attention_masks(groups, preset, num_layers=4)
    assert len(masks) == 4
    for layer, (mask, want) in enumerate(zip(masks, expected, strict=True)):
        assert torch.equal(mask[0], want), f"{preset}, layer {layer}:\n{mask[0].int()}"


def test_roberta_separator_pair_attends_to_itself_under_mask0():
    roberta = torch.tensor([[0, 7, 2, 2, 9, 2]])
    mask = layer_attention_masks(token_groups(roberta, None, 2), "mask0", num_layers=1)[0][0]
    assert mask[2].tolist() == [False, False, True, True, False, False]
    assert mask[3].tolist() == [False, False, True, True, False, False]
    assert mask[4].tolist() == [False, True, False, False, True, True]  # document: not to <s>, not to </s></s>


def test_rules_are_checked():
    with pytest.raises(ValueError, match="unknown mask preset"):
        mask_rules("mask4")
    with pytest.raises(ValueError, match="unknown token group"):
        AttentionRule(("query",), ("title",))
    with pytest.raises(ValueError, match="empty or negative layer range"):
        AttentionRule(("query",), ("document",), 3, 3)
    groups = token_groups(PAIR, PAIR_MASK, SEP)
    with pytest.raises(ValueError, match="has 4 layers"):
        layer_attention_masks(groups, "mask3-l6", num_layers=4)
    with pytest.raises(ValueError, match="nothing to attend to"):
        layer_attention_masks(groups, [AttentionRule(("sep_1",), GROUPS)], num_layers=2)


# ---- on models ----------------------------------------------------------------------------------------------------

FAMILIES = ("bert", "roberta", "electra", "modernbert")
QUERIES = ["what is a debian package", "kernel"]
DOCUMENTS = ["a package is an archive of files and metadata installed by dpkg", "linux kernel"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-masking")
    return {family: build_tiny_backbone(root, family, cross_encoder=True) for family in FAMILIES}


def load(folder, implementation="eager"):
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=implementation)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_mask_that_blocks_nothing_gives_the_unmasked_logits(tiny, family, implementation):
    model, tokenizer = load(tiny[family], implementation)
    inputs = tokenizer(QUERIES, DOCUMENTS, padding=True, return_tensors="pt")
    never = [AttentionRule(("query",), ("document",), 0, 1)]  # blocks nothing on a model scored from layer 1 on
    with torch.inference_mode():
        reference = model(**inputs).logits
        unmasked = score_with_mask(model, inputs, "none", tokenizer=tokenizer)
        masked = score_with_mask(model, inputs, never, tokenizer=tokenizer)
    assert torch.equal(unmasked, reference)
    assert not torch.allclose(masked, reference)  # the rule does reach layer 0


@pytest.mark.parametrize("family", FAMILIES)
def test_mask2_documents_ignore_the_query_and_mask3_queries_ignore_the_document(tiny, family):
    """Swap the query (or the document) for another text of the same length: under Mask2 no document state changes
    in any layer; under Mask3-l2 no state of [CLS], the query or sep_1 changes below layer 2. Unmasked, both do."""
    model, tokenizer = load(tiny[family])
    layers = model.config.num_hidden_layers
    queries = tokenizer(["alpha beta gamma", "delta zeta theta"], ["same document words here"] * 2, return_tensors="pt")
    documents = tokenizer(["same query"] * 2, ["alpha beta gamma", "delta zeta theta"], return_tensors="pt")
    groups = token_groups(queries["input_ids"], queries["attention_mask"], tokenizer.sep_token_id)
    document_side = (groups[0] == GROUPS.index("document")) | (groups[0] == GROUPS.index("sep_2"))
    groups = token_groups(documents["input_ids"], documents["attention_mask"], tokenizer.sep_token_id)
    query_side = groups[0] < GROUPS.index("document")

    def states(preset, inputs):
        with torch.inference_mode():
            masked = MaskedCrossEncoder(model, preset, tokenizer=tokenizer)
            return masked(**inputs, output_hidden_states=True).hidden_states

    for hidden in states("mask2", queries)[1:]:
        torch.testing.assert_close(hidden[0, document_side], hidden[1, document_side], rtol=0, atol=1e-6)
    assert not torch.allclose(
        states("none", queries)[layers][0, document_side], states("none", queries)[layers][1, document_side]
    )
    hidden = states("mask3-l2", documents)
    torch.testing.assert_close(hidden[2][0, query_side], hidden[2][1, query_side], rtol=0, atol=1e-6)
    assert not torch.allclose(hidden[3][0, query_side], hidden[3][1, query_side])


def test_eager_and_sdpa_agree_under_every_preset(tiny):
    eager, tokenizer = load(tiny["bert"], "eager")
    sdpa, _ = load(tiny["bert"], "sdpa")
    inputs = tokenizer(QUERIES, DOCUMENTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        for preset in ("mask0", "mask1", "mask2", "mask3-l2", "separate-l2"):
            torch.testing.assert_close(
                score_with_mask(eager, inputs, preset, tokenizer=tokenizer),
                score_with_mask(sdpa, inputs, preset, tokenizer=tokenizer),
                rtol=0,
                atol=1e-5,
            )


def test_unsupported_models_are_refused(tiny, tmp_path):
    model, tokenizer = load(tiny["bert"])
    with pytest.raises(ValueError, match="tokenizer"):
        MaskedCrossEncoder(model, "mask0")
    mpnet = AutoModelForSequenceClassification.from_pretrained(
        build_tiny_backbone(tmp_path, "mpnet", cross_encoder=True)
    )
    with pytest.raises(ValueError, match="supports the families"):
        MaskedCrossEncoder(mpnet, "mask0", sep_token_id=2)
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="attn_implementation='sdpa' or 'eager'"):
        MaskedCrossEncoder(model, "mask0", tokenizer=tokenizer)


# ---- the oracle: MICE's independent layers --------------------------------------------------------------------------


def mice_style_inputs(model_config, query: dict, document: dict) -> dict:
    """``[CLS] q [SEP] (pad) [CLS] d [SEP] (pad)``: each half keeps the positions and token type it has in MICE."""
    query_ids, query_mask = query["query_input_ids"], query["query_attention_mask"]
    document_ids, document_mask = document["document_input_ids"], document["document_attention_mask"]
    if (
        model_config.model_type == "roberta"
    ):  # positions count real tokens from padding_idx + 1; padding gets padding_idx
        pad = model_config.pad_token_id

        def positions(mask):
            return (mask.cumsum(1) * mask + pad).long()
    else:

        def positions(mask):
            return torch.arange(mask.shape[1]).expand_as(mask)

    inputs = {
        "input_ids": torch.cat([query_ids, document_ids], 1),
        "attention_mask": torch.cat([query_mask, document_mask], 1),
        "position_ids": torch.cat([positions(query_mask), positions(document_mask)], 1),
    }
    if getattr(model_config, "type_vocab_size", 0) > 1:
        inputs["token_type_ids"] = torch.cat([torch.zeros_like(query_ids), torch.ones_like(document_ids)], 1)
    return inputs


def assert_lower_layers_match(cross_encoder, tokenizer, mice, queries, documents, atol=1e-5):
    fusion = mice.config.fusion_layer
    query = mice.tokenize_queries(tokenizer, queries)
    document = mice.tokenize_documents(tokenizer, documents)
    inputs = mice_style_inputs(cross_encoder.config, query, document)
    with torch.inference_mode():
        masked = MaskedCrossEncoder(cross_encoder, f"separate-l{fusion}", tokenizer=tokenizer)
        hidden = masked(**inputs, output_hidden_states=True).hidden_states[fusion]
        query_states = mice.mice.encode_queries(query["query_input_ids"], query["query_attention_mask"])
        document_states = mice.encode_documents(document["document_input_ids"], document["document_attention_mask"])
    query_length = query["query_input_ids"].shape[1]
    query_real = query["query_attention_mask"].bool()
    document_real = document["document_attention_mask"].bool()
    torch.testing.assert_close(hidden[:, :query_length][query_real], query_states[query_real], rtol=0, atol=atol)
    torch.testing.assert_close(
        hidden[:, query_length:][document_real], document_states.hidden_states[document_real], rtol=0, atol=atol
    )
    return hidden


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_separated_masked_cross_encoder_equals_mice_lower_layers(tiny, family):
    cross_encoder, tokenizer = load(tiny[family])
    mice = MiceForSequenceClassification.from_backbone(str(tiny[family]), fusion_layer=2, interaction_layers=2).eval()
    queries = ["what is a debian package", "kernel", "apt"]
    documents = ["a package is an archive", "the linux kernel is the core of the system", "apt installs packages"]
    hidden = assert_lower_layers_match(cross_encoder, tokenizer, mice, queries, documents)
    # Sanity: without the separation the query states do depend on the document (the comparison can fail).
    inputs = mice_style_inputs(
        cross_encoder.config, mice.tokenize_queries(tokenizer, queries), mice.tokenize_documents(tokenizer, documents)
    )
    with torch.inference_mode():
        joint = MaskedCrossEncoder(cross_encoder, "none", tokenizer=tokenizer)(**inputs, output_hidden_states=True)
    assert not torch.allclose(joint.hidden_states[2], hidden, atol=1e-3)


@pytest.mark.real_model
def test_separated_masked_minilm_equals_mice_lower_layers(minilm_path):
    torch.manual_seed(0)
    cross_encoder = AutoModelForSequenceClassification.from_pretrained(
        minilm_path, num_labels=1, attn_implementation="sdpa"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    mice = MiceForSequenceClassification.from_backbone(minilm_path, fusion_layer=4, interaction_layers=2).eval()
    assert_lower_layers_match(
        cross_encoder,
        tokenizer,
        mice,
        ["how do I pin a package version with apt", "grub rescue"],
        ["Use apt preferences: create a file in /etc/apt/preferences.d with Pin-Priority.", "Boot from a live USB."],
    )
