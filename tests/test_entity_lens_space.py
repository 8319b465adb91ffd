"""The Space's Entity Lens tab (spaces/mice-rerank-demo/entity_lens_tab.py) on a tiny model with random task
vectors: its handler against the lens called independently, its limits, its configuration, and the launched app."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
import torch
from loaders import load_file
from test_space import free_port
from tiny_causal_lms import build_tiny_causal_lm

from entity_lens import EntityLens, TaskVector, TaskVectorSet

TAB_FILE = Path(__file__).resolve().parents[1] / "spaces" / "mice-rerank-demo" / "entity_lens_tab.py"
SENTENCE = "Marie Curie worked in Paris with Albert Einstein."
RAW, CONTEXT = "Entity alone (raw)", "Entity in its sentence (context)"


@pytest.fixture(scope="module")
def tab_module():
    return load_file(TAB_FILE, "entity_lens_tab")


@pytest.fixture(scope="module")
def vector_folders(tmp_path_factory, one_thread) -> list[str]:
    root = tmp_path_factory.mktemp("space-lens")
    model = build_tiny_causal_lm(root, "gemma3", num_hidden_layers=2)
    generator = torch.Generator().manual_seed(0)
    folders = []
    for mode in ("raw", "context"):
        vectors = {layer: TaskVector(torch.randn(32, generator=generator) * 3) for layer in (0, 1)}
        folders.append(str(TaskVectorSet(vectors, str(model), 32, mode).save(root / mode)))
    return folders


@pytest.fixture(scope="module")
def tab(tab_module, vector_folders):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MICE_SPACE_ENTITY_LENS", ",".join(vector_folders))
        return tab_module.EntityLensTab.from_environment()


def test_table_is_what_the_lens_decodes_at_each_layer(tab, vector_folders):
    table, summary = tab.decode(f"  {SENTENCE} ", " Albert Einstein", CONTEXT)
    expected = EntityLens.from_pretrained(vector_folders).lens(SENTENCE, "Albert Einstein", "context")
    assert table["layer"].tolist() == [0, 1]
    assert table["decoded mention"].tolist() == [item.mention for item in expected]
    exact = sum(item.mention == "Albert Einstein" for item in expected)
    assert summary.startswith(f"**Albert Einstein**: {exact} of 2 layers decode it exactly (context mode")
    raw_table, _ = tab.decode("", "Paris", RAW)  # raw mode needs no sentence
    assert raw_table["decoded mention"].tolist() == [i.mention for i in tab.lens.lens("", "Paris", "raw")]


def test_inputs_are_bounded_and_errors_are_messages(tab_module, tab):
    decode = tab_module.visitor_safe(tab.decode)
    for arguments, message in (
        ((SENTENCE, "", RAW), "Pick or type an entity"),
        (("x" * 501, "Paris", RAW), "501 characters; the limit is 500"),
        ((SENTENCE, "P" * 101, RAW), "101 characters; the limit is 100"),
        ((SENTENCE, "Rome", CONTEXT), "'Rome' does not appear in the sentence"),
        ((SENTENCE, "Paris", "a path typed by a visitor"), "Choose how the entity is read"),
    ):
        with pytest.raises(gr.Error, match=message):
            decode(*arguments)


def test_entity_candidates_come_from_the_sentence(tab):
    choices = [value for value, _ in tab.candidates(SENTENCE).choices]
    assert {"Marie Curie", "Paris", "Albert Einstein"} <= set(choices)
    assert tab.candidates("").choices == []


def test_the_tab_comes_only_from_the_configuration(tab_module, tab, monkeypatch):
    blocks = tab_module.build_tab(tab)
    inputs = {id(c) for dependency in blocks.fns.values() for c in dependency.inputs}
    textboxes = [c for c in blocks.blocks.values() if isinstance(c, gr.Textbox) and id(c) in inputs]
    assert [t.label for t in textboxes] == ["Sentence (up to 500 characters)"]
    assert not any(isinstance(c, gr.File | gr.UploadButton) for c in blocks.blocks.values())
    rerank = gr.Blocks()
    monkeypatch.setenv("MICE_SPACE_ENTITY_LENS", "off")
    assert tab_module.with_entity_lens_tab(rerank) is rerank
    monkeypatch.setenv("MICE_SPACE_ENTITY_LENS", "/no/such/vectors")  # a bad setting leaves the tab out, logged
    assert tab_module.with_entity_lens_tab(rerank) is rerank


def test_launched_tab_through_gradio_client(tab_module, tab):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    blocks = tab_module.build_tab(tab)
    port = free_port()
    blocks.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        table, summary = client.predict(SENTENCE, "Paris", CONTEXT, api_name="/entity_lens")
        expected = [item.mention for item in tab.lens.lens(SENTENCE, "Paris", "context")]
        assert [row[1] for row in table["data"]] == expected and "Paris" in summary
        with pytest.raises(AppError, match="the limit is 500"):
            client.predict("x" * 600, "Paris", RAW, api_name="/entity_lens")
    finally:
        blocks.close()
