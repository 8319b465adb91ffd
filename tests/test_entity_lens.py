"""The Entity Lens on tiny random Llama and Gemma-3 models: hook points, extraction, injection, training, decoding,
task-vector files, metrics, errors. Every value is checked against the model run independently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_causal_lms import FAMILIES, build_tiny_causal_lm
from tiny_models import build_tiny_backbone

from entity_lens import (
    EntityLens,
    EntityLensError,
    EntityMention,
    MentionSet,
    TaskVector,
    TaskVectorSet,
    TrainingConfig,
    decode_mentions,
    extract_representations,
    load_causal_lm,
    mention_ids,
    mention_metrics,
    resid_post,
    run_with_cache,
    train_task_vector,
)
from entity_lens.hooks import check_layers, decoder_blocks, hooks
from entity_lens.prompt import IGNORE, build_batch, inputs_embeds, prompt_ids, target_logits
from entity_lens.representations import mention_input
from entity_lens.training import evaluate_tokens, learning_rate_factor

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTITIES = ["Barack Obama", "Paris", "Marie Curie", "Albert Einstein", "Honolulu", "Berlin", "Ada Lovelace", "Tokyo"]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory, one_thread):
    folder = build_tiny_causal_lm(tmp_path_factory.mktemp(request.param), request.param)
    model, tokenizer = load_causal_lm(str(folder))
    return model, tokenizer, folder


def bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id]


def forward_states(model, ids: list[int]) -> tuple:
    """transformers' own hidden states for one unpadded sequence."""
    with torch.no_grad():
        return model(torch.tensor([ids]), output_hidden_states=True).hidden_states


# ---- hook points ------------------------------------------------------------------------------------------------


def test_resid_post_is_each_blocks_output_and_the_last_is_before_the_final_norm(tiny):
    model, tokenizer, _ = tiny
    ids = bos(tokenizer) + tokenizer("Marie Curie was born in Warsaw", add_special_tokens=False).input_ids
    layers = list(range(model.config.num_hidden_layers))
    cache = run_with_cache(model, [resid_post(layer) for layer in layers], torch.tensor([ids]))
    states = forward_states(model, ids)
    for layer in layers[:-1]:  # transformers' hidden_states[ℓ + 1] is block ℓ's output ...
        torch.testing.assert_close(cache[resid_post(layer)], states[layer + 1], rtol=0, atol=0)
    # ... except the last, which transformers gives after the final norm.
    last = cache[resid_post(layers[-1])]
    torch.testing.assert_close(model.base_model.norm(last), states[-1], rtol=0, atol=1e-6)
    assert not torch.allclose(last, states[-1])


def test_hooks_can_replace_an_activation_and_are_removed_afterwards(tiny):
    model, tokenizer, _ = tiny
    ids = torch.tensor([bos(tokenizer) + tokenizer("Paris", add_special_tokens=False).input_ids])
    registered = [len(block._forward_hooks) for block in decoder_blocks(model)]  # transformers adds its own
    with torch.no_grad():
        plain = model(ids).logits
        with hooks(model, [(resid_post(0), lambda activation, name: torch.zeros_like(activation))]):
            zeroed = model(ids).logits
        again = model(ids).logits
    assert not torch.allclose(plain, zeroed)
    torch.testing.assert_close(plain, again, rtol=0, atol=0)
    assert [len(block._forward_hooks) for block in decoder_blocks(model)] == registered


# ---- representations --------------------------------------------------------------------------------------------


def test_representations_equal_unbatched_forward_passes_in_every_mode(tiny):
    model, tokenizer, _ = tiny
    text = "In 1891 Marie Curie moved to Paris, where Marie Curie studied physics."
    mentions = [
        EntityMention("Marie Curie", text),
        EntityMention("Paris", text),
        EntityMention("Marie Curie", text, 42),
    ]
    layers = [0, model.config.num_hidden_layers - 1]
    for mode in ("raw", "context", "after_context"):
        for pooling in ("last", "mean"):
            batched = extract_representations(model, tokenizer, mentions, layers, mode, pooling, batch_size=2)
            for row, mention in enumerate(mentions):
                ids, positions = mention_input(tokenizer, mention, mode)
                cache = run_with_cache(model, [resid_post(layer) for layer in layers], torch.tensor([ids]))
                for column, layer in enumerate(layers):
                    states = cache[resid_post(layer)][0]
                    expected = states[positions[-1]] if pooling == "last" else states[positions].mean(dim=0)
                    torch.testing.assert_close(batched[row, column], expected, rtol=1e-5, atol=1e-5)


def test_mention_positions_follow_the_mode(tiny):
    _, tokenizer, _ = tiny
    text = "The capital is Paris, and Paris is large."
    paris = tokenizer("The capital is Paris", add_special_tokens=False).input_ids
    ids, positions = mention_input(tokenizer, EntityMention("Paris", text), "context")
    assert ids == bos(tokenizer) + paris  # the text is read up to the end of the mention only
    prefix = len(tokenizer("The capital is", add_special_tokens=False).input_ids)
    assert positions == list(range(1 + prefix, 1 + len(paris)))
    ids, positions = mention_input(tokenizer, EntityMention("Paris", text, 26), "context")  # the second Paris
    assert tokenizer.decode(ids[positions[0] : positions[-1] + 1]).strip() == "Paris"
    assert len(ids) > len(paris) + 1
    ids, positions = mention_input(tokenizer, EntityMention("Paris"), "raw")
    assert ids == bos(tokenizer) + tokenizer("Paris", add_special_tokens=False).input_ids
    assert positions == list(range(1, len(ids)))
    ids, positions = mention_input(tokenizer, EntityMention("Paris", text), "after_context")
    assert tokenizer.decode(ids[1:]) == f"{text} Paris" and tokenizer.decode(ids[positions[0] :]).strip() == "Paris"


# ---- the decoding prompt ---------------------------------------------------------------------------------------


def test_mention_tokens_are_what_follows_the_prompt_then_eos(tiny):
    _, tokenizer, _ = tiny
    whole = tokenizer("_ > Marie Curie", add_special_tokens=False).input_ids
    assert mention_ids(tokenizer, "Marie Curie") == whole[2:] + [tokenizer.eos_token_id]
    assert prompt_ids(tokenizer) == bos(tokenizer) + whole[:2]
    for empty in ("", "   "):
        with pytest.raises(EntityLensError, match="maps to no token"):
            mention_ids(tokenizer, empty)


def test_injected_vectors_sit_exactly_at_the_placeholder_and_the_arrow(tiny):
    model, tokenizer, _ = tiny
    d_model = model.config.hidden_size
    representations, task_vector = torch.randn(3, d_model), torch.randn(d_model)
    contexts = ["Paris is large.", None, "Marie Curie moved to Paris in 1891."]
    prompts = [prompt_ids(tokenizer, context) for context in contexts]
    batch = build_batch(tokenizer, prompts, [mention_ids(tokenizer, e) for e in ENTITIES[:3]])
    seen = []

    def capture(module, args, kwargs):
        seen.append(kwargs.get("hidden_states", args[0] if args else None).detach().clone())

    handle = decoder_blocks(model)[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            target_logits(model, batch, representations, task_vector)
            decode_mentions(model, tokenizer, representations, task_vector, contexts, max_new_tokens=2)
    finally:
        handle.remove()
    token_embeddings = model.get_input_embeddings()(batch.input_ids)
    for block_input in (seen[0], seen[1]):  # training's forward, then the prompt pass of generate()
        columns = block_input.shape[1]
        for row, prompt in enumerate(prompts):
            underscore, arrow = batch.representation_column, batch.task_vector_column
            assert batch.input_ids[row, underscore : arrow + 1].tolist() == prompt[-2:]
            torch.testing.assert_close(block_input[row, underscore], representations[row], rtol=0, atol=0)
            torch.testing.assert_close(block_input[row, arrow], task_vector, rtol=0, atol=0)
            others = [c for c in range(columns) if c not in (underscore, arrow)]
            torch.testing.assert_close(block_input[row, others], token_embeddings[row, others], rtol=0, atol=0)


def test_logits_at_targets_equal_the_full_forward(tiny):
    model, tokenizer, _ = tiny
    d_model = model.config.hidden_size
    targets = [mention_ids(tokenizer, e) for e in ENTITIES[:4]]
    batch = build_batch(tokenizer, [prompt_ids(tokenizer, c) for c in (None, "Paris.", None, "Ada")], targets)
    representations, task_vector = torch.randn(4, d_model), torch.randn(d_model)
    with torch.no_grad():
        logits, labels = target_logits(model, batch, representations, task_vector)
        full = model(
            inputs_embeds=inputs_embeds(model, batch, representations, task_vector),
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits
    labelled = batch.labels != IGNORE
    torch.testing.assert_close(logits, full[labelled], rtol=1e-5, atol=1e-5)
    assert labels.tolist() == [token for target in targets for token in target]
    # Column `>` predicts the first mention token of each row.
    assert batch.labels[:, batch.task_vector_column].tolist() == [t[0] for t in targets]


# ---- decoding --------------------------------------------------------------------------------------------------


def reference_greedy(model, tokenizer, representation, task_vector, steps: int) -> list[int]:
    """Greedy decoding by hand: the whole sequence through the model at every step, no cache, no batch."""
    ids = prompt_ids(tokenizer)
    generated: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            embeds = model.get_input_embeddings()(torch.tensor([ids + generated]))
            embeds[:, 1] = representation  # `<bos> _ >`: `_` is column 1, `>` column 2
            embeds[:, 2] = task_vector
            generated.append(model(inputs_embeds=embeds).logits[0, -1].argmax().item())
    return generated


def test_greedy_decoding_stops_at_eos(tiny):
    model, tokenizer, folder = tiny
    for seed in range(20):  # a representation whose greedy decoding writes a new token after the first one
        generator = torch.Generator().manual_seed(seed)
        representation, task_vector = (torch.randn(model.config.hidden_size, generator=generator) * 3 for _ in "rv")
        reference = reference_greedy(model, tokenizer, representation, task_vector, steps=6)
        new = [k for k in range(1, 6) if reference[k] not in reference[:k]]
        if new:
            break
    # Make that token the end of sequence: decoding must stop right before it.
    stop = new[0]
    eos_tokenizer = load_causal_lm(str(folder))[1]
    eos_tokenizer.eos_token = eos_tokenizer.convert_ids_to_tokens(reference[stop])
    (decoded,) = decode_mentions(model, eos_tokenizer, representation[None], task_vector, max_new_tokens=6)
    assert decoded.ended and decoded.token_ids == reference[:stop]
    assert decoded.mention == eos_tokenizer.decode(reference[:stop], skip_special_tokens=True).strip()
    # With an end-of-sequence token it never writes, decoding runs to max_new_tokens.
    unused = next(t for t in range(len(tokenizer)) if t not in reference and t not in tokenizer.all_special_ids)
    eos_tokenizer.eos_token = eos_tokenizer.convert_ids_to_tokens(unused)
    (decoded,) = decode_mentions(model, eos_tokenizer, representation[None], task_vector, max_new_tokens=6)
    assert not decoded.ended and decoded.token_ids == reference


def test_batched_decoding_with_contexts_equals_one_by_one(tiny):
    model, tokenizer, _ = tiny
    d_model = model.config.hidden_size
    representations, task_vectors = torch.randn(3, d_model) * 3, torch.randn(3, d_model) * 3
    contexts = ["Ada Lovelace wrote about the Analytical Engine.", "Paris", "The Amazon River flows into the ocean."]
    batched = decode_mentions(model, tokenizer, representations, task_vectors, contexts, max_new_tokens=5)
    for row in range(3):
        (alone,) = decode_mentions(
            model, tokenizer, representations[row : row + 1], task_vectors[row], contexts[row : row + 1], 5
        )
        assert batched[row].token_ids == alone.token_ids


# ---- training --------------------------------------------------------------------------------------------------


def mention_set(model, tokenizer, entities, layer: int = 1) -> MentionSet:
    representations = extract_representations(model, tokenizer, [EntityMention(e) for e in entities], [layer])[:, 0]
    return MentionSet(representations, [mention_ids(tokenizer, e) for e in entities])


def test_training_the_task_vector_lowers_the_loss_and_keeps_the_best_on_dev(tiny):
    model, tokenizer, _ = tiny
    examples = mention_set(model, tokenizer, ENTITIES)
    config = TrainingConfig(learning_rate=0.3, batch_size=4, epochs=8, constant_epochs=5, seed=3)
    start = TaskVector.random(model.config.hidden_size, torch.Generator().manual_seed(3))
    before = evaluate_tokens(model, tokenizer, start, examples)
    result = train_task_vector(model, tokenizer, examples, examples, config, progress=False)
    after = evaluate_tokens(model, tokenizer, result.task_vector, examples)
    # A random 32-wide model starts near log(vocabulary) = 6 nats and v alone can only move it so far.
    assert after["loss"] < before["loss"] - 0.3
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] - 0.3
    assert not torch.equal(result.task_vector.vector, start.vector)
    assert result.steps == 8 * 2 and len(result.history) == 8
    assert result.best_dev_token_accuracy == max(h["dev_token_accuracy"] for h in result.history)
    assert after["token_accuracy"] == pytest.approx(result.best_dev_token_accuracy)
    assert all(not p.requires_grad for p in model.parameters())


def test_v_starts_from_n01_or_from_the_arrow_embedding(tiny):
    model, tokenizer, _ = tiny
    examples = mention_set(model, tokenizer, ENTITIES[:4])
    frozen = {"learning_rate": 0.0, "batch_size": 4, "epochs": 1, "constant_epochs": 1, "seed": 5}
    arrow = train_task_vector(
        model, tokenizer, examples, examples, TrainingConfig(**frozen, init="arrow"), progress=False
    )
    expected = model.get_input_embeddings()(torch.tensor(prompt_ids(tokenizer)[-1:]))[0]
    torch.testing.assert_close(arrow.task_vector.vector, expected, rtol=0, atol=0)
    normal = train_task_vector(model, tokenizer, examples, examples, TrainingConfig(**frozen), progress=False)
    torch.testing.assert_close(
        normal.task_vector.vector, TaskVector.random(32, torch.Generator().manual_seed(5)).vector
    )
    with pytest.raises(EntityLensError, match="unknown init 'zeros'"):
        TrainingConfig(init="zeros")


def test_linear_map_variant_trains_the_map_and_keeps_v_frozen(tiny):
    model, tokenizer, _ = tiny
    examples = mention_set(model, tokenizer, ENTITIES)
    v = TaskVector.random(model.config.hidden_size, torch.Generator().manual_seed(1))
    config = TrainingConfig(learning_rate=0.01, batch_size=4, epochs=4, constant_epochs=2, variant="linear")
    identity = v.with_identity_map()
    torch.testing.assert_close(identity.transform(examples.representations), examples.representations)
    before = evaluate_tokens(model, tokenizer, identity, examples)["loss"]
    result = train_task_vector(model, tokenizer, examples, examples, config, initial=v, progress=False)
    assert torch.equal(result.task_vector.vector, v.vector)
    assert not torch.equal(result.task_vector.linear.weight, torch.eye(model.config.hidden_size))
    assert evaluate_tokens(model, tokenizer, result.task_vector, examples)["loss"] < before
    with pytest.raises(EntityLensError, match="keeps a trained v frozen"):
        train_task_vector(model, tokenizer, examples, examples, config, progress=False)


def test_learning_rate_is_constant_then_a_cosine_down_to_a_tenth():
    config = TrainingConfig(epochs=5, constant_epochs=3, final_lr_ratio=0.1)
    factors = [learning_rate_factor(step, 10, config) for step in range(50)]
    assert factors[:30] == [1.0] * 30
    assert factors[30] == 1.0 and factors[40] == pytest.approx(0.55) and learning_rate_factor(50, 10, config) == 0.1
    assert all(a >= b for a, b in zip(factors[30:], factors[31:], strict=False))


# ---- task vectors on disk --------------------------------------------------------------------------------------

LOAD_IN_FRESH_PROCESS = """
import json, sys
from entity_lens import TaskVectorSet
vectors = TaskVectorSet.load(sys.argv[1])
print(json.dumps({
    "layers": vectors.layers, "model": vectors.model, "mode": vectors.mode, "task": vectors.task,
    "variant": vectors.variant, "record": vectors.record,
    "tensors": {str(l): v.vector.tolist() for l, v in vectors.vectors.items()},
    "linear": {str(l): v.linear.weight.tolist() for l, v in vectors.vectors.items() if v.linear is not None},
}))
"""


def test_task_vectors_round_trip_through_save_and_load_in_a_fresh_process(tmp_path):
    d_model = 8
    linear = TaskVector.random(d_model).with_identity_map()
    with torch.no_grad():
        linear.linear.weight.add_(torch.randn(d_model, d_model))
    saved = TaskVectorSet(
        {0: TaskVector.random(d_model), 5: linear}, "some/model", d_model, mode="context", record={"note": "é"}
    )
    saved.save(tmp_path / "vectors")
    assert sorted(p.name for p in (tmp_path / "vectors").iterdir()) == ["entity_lens.json", "task_vectors.safetensors"]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_IN_FRESH_PROCESS, str(tmp_path / "vectors")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert loaded["layers"] == [0, 5] and loaded["model"] == "some/model" and loaded["mode"] == "context"
    assert loaded["variant"] == "linear" and loaded["record"] == {"note": "é"} and loaded["task"] == "mention"
    for layer, vector in saved.vectors.items():
        assert torch.equal(torch.tensor(loaded["tensors"][str(layer)]), vector.vector.detach())
    assert torch.equal(torch.tensor(loaded["linear"]["5"]), linear.linear.weight.detach())


def test_broken_task_vector_folders_give_clear_errors(tmp_path):
    TaskVectorSet({1: TaskVector.random(8)}, "m", 8).save(tmp_path / "ok")
    record = json.loads((tmp_path / "ok" / "entity_lens.json").read_text())
    cases = {
        "no entity_lens.json": lambda f: (f / "entity_lens.json").unlink(),
        "no task_vectors.safetensors": lambda f: (f / "task_vectors.safetensors").unlink(),
        "is not a readable safetensors file": lambda f: (f / "task_vectors.safetensors").write_bytes(b"junk"),
        "should have shape (16,)": lambda f: (f / "entity_lens.json").write_text(json.dumps({**record, "d_model": 16})),
        "expected 'entity-lens-task-vectors/1'": lambda f: (f / "entity_lens.json").write_text(
            json.dumps({**record, "format": "other"})
        ),
    }
    for message, damage in cases.items():
        folder = tmp_path / message.replace(" ", "-").replace("'", "")
        TaskVectorSet({1: TaskVector.random(8)}, "m", 8).save(folder)
        damage(folder)
        with pytest.raises(EntityLensError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
            TaskVectorSet.load(folder)
        assert "\n" not in str(raised.value)


# ---- the lens and its errors -----------------------------------------------------------------------------------


def random_lens(model, tokenizer, folder, layers) -> EntityLens:
    generator = torch.Generator().manual_seed(0)
    d_model = model.config.hidden_size
    sets = [
        TaskVectorSet(
            {layer: TaskVector(torch.randn(d_model, generator=generator) * 3) for layer in layers},
            str(folder),
            d_model,
            mode,
        )
        for mode in ("raw", "context")
    ]
    return EntityLens(model, tokenizer, sets)


def test_lens_decodes_each_layer_with_its_own_task_vector(tiny):
    model, tokenizer, folder = tiny
    layers = list(range(model.config.num_hidden_layers))
    lens = random_lens(model, tokenizer, folder, layers)
    text = "Marie Curie moved to Paris in 1891."
    for mode in ("raw", "context"):
        decoded = lens.lens(text, "Marie Curie", mode)
        assert [item.layer for item in decoded] == layers
        representations = extract_representations(model, tokenizer, [EntityMention("Marie Curie", text)], layers, mode)
        for column, layer in enumerate(layers):
            (alone,) = decode_mentions(
                model, tokenizer, representations[:, column], lens.vectors(mode).vectors[layer].vector
            )
            assert decoded[column].mention == alone.mention
    assert [item.layer for item in lens.lens(text, "Paris", "raw", layers=[layers[-1]])] == [layers[-1]]


def test_a_layer_outside_the_model_is_a_clear_error(tiny):
    model, tokenizer, folder = tiny
    count = model.config.num_hidden_layers
    for layer in (count, -1, 1.5):
        with pytest.raises(EntityLensError, match=f"has {count} blocks, choose layers from 0 to {count - 1}"):
            check_layers(model, [layer])
    with pytest.raises(EntityLensError, match="outside the model"):
        extract_representations(model, tokenizer, [EntityMention("Paris")], [count])
    with pytest.raises(EntityLensError, match="outside the model"):
        TaskVectorSet(
            {count + 2: TaskVector.random(model.config.hidden_size)}, "m", model.config.hidden_size
        ).check_model(model)
    lens = random_lens(model, tokenizer, folder, [0])
    with pytest.raises(EntityLensError, match=r"no task vector for layer\(s\) \[1\]"):
        lens.lens("", "Paris", layers=[1])


def test_an_entity_that_maps_to_no_token_is_a_clear_error(tiny):
    model, tokenizer, _ = tiny
    for mention, mode, message in (
        (EntityMention("   "), "raw", "the entity is empty"),
        (EntityMention("Rome", "Paris is large."), "context", "'Rome' does not occur in the text"),
        (EntityMention("Paris", "Paris is large.", 3), "context", "does not occur in the text at character 3"),
    ):
        with pytest.raises(EntityLensError, match=message) as raised:
            extract_representations(model, tokenizer, [mention], [0], mode)
        assert "\n" not in str(raised.value)
    with pytest.raises(EntityLensError, match="task vectors were trained on m .d_model 7."):
        TaskVectorSet({0: TaskVector.random(7)}, "m", 7).check_model(model)


def test_a_model_that_is_not_causal_is_refused(tmp_path, tiny):
    bert = build_tiny_backbone(tmp_path, "bert", num_hidden_layers=2)
    with pytest.raises(EntityLensError, match="not a causal language model") as raised:
        load_causal_lm(str(bert))
    assert "\n" not in str(raised.value)
    from transformers import AutoModel, AutoTokenizer

    with pytest.raises(EntityLensError, match="BertModel, not a causal language model"):
        EntityLens(AutoModel.from_pretrained(bert), AutoTokenizer.from_pretrained(bert), [])
    with pytest.raises(EntityLensError, match="cannot load a model from"):
        load_causal_lm(str(tmp_path / "missing"))


# ---- metrics ---------------------------------------------------------------------------------------------------


def test_metrics_by_hand():
    predictions = ["Marie Curie", "Curie", "", "Pierre Curie", " Paris "]
    references = ["Marie Curie", "Marie Curie", "Rome", "Marie Curie", "Paris"]
    metrics = mention_metrics(predictions, references)
    assert metrics["examples"] == 5
    assert metrics["exact_match"] == pytest.approx(2 / 5)  # "Marie Curie" and " Paris " (stripped)
    assert metrics["partial_match"] == pytest.approx(3 / 5)  # + "Curie" inside; "" matches nothing
    assert mention_metrics(["Paris"], ["Paris"])["chrf"] == pytest.approx(100.0)
    assert mention_metrics(["xyz"], ["Paris"])["chrf"] == pytest.approx(0.0)
    assert mention_metrics([], []) == {"examples": 0, "exact_match": None, "partial_match": None, "chrf": None}
