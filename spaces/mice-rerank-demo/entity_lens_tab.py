"""The Space's "Entity Lens" tab: type a sentence, pick an entity in it, see the mention each layer decodes.

The Entity Lens (Morand, Mothe and Piwowarski, arXiv 2510.09421) writes an entity's hidden state at layer ℓ into the
prompt `<bos> _ >` (over `_`) with a learned task vector (over `>`), and lets the language model spell the mention
back out. The task vectors come only from the Space's configuration, never from the visitor:
``MICE_SPACE_ENTITY_LENS`` names task-vector folders or Hub ids (comma-separated: one per mode); by default the ones
packaged with mice-rerank for gemma-3-270m (a 4-bit GGUF from PyPI); ``off`` removes the tab.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time

import gradio as gr
import pandas as pd

from entity_lens import EntityLens, EntityLensError
from entity_lens.data import SPACY_MODEL

logger = logging.getLogger("mice_space.entity_lens")

ENTITY_LENS_VARIABLE = "MICE_SPACE_ENTITY_LENS"
MAX_TEXT_CHARS = 500
MAX_ENTITY_CHARS = 100
MODES = {"Entity alone (raw)": "raw", "Entity in its sentence (context)": "context"}
EXAMPLES = [
    ["Marie Curie was born in Warsaw and moved to Paris in 1891.", "Marie Curie"],
    ["The Treaty of Versailles was signed at the end of the First World War.", "Treaty of Versailles"],
    ["Mount Kilimanjaro is the highest mountain in Tanzania.", "Mount Kilimanjaro"],
]
# Runs of capitalised words (with "of", "the", ... inside): entity candidates when spaCy is not installed.
CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:(?:of|the|de|von|van|la|del)\s+)*[A-Z][\w'’-]*)*")


class VisitorInputError(ValueError):
    """Input the visitor can fix; shown as is."""


def parse_inputs(text: str | None, entity: str | None, mode_label: str | None) -> tuple[str, str, str]:
    """The stripped text and entity and the mode, within the tab's limits."""
    text, entity = (text or "").strip(), (entity or "").strip()
    if mode_label not in MODES:
        raise VisitorInputError(f"Choose how the entity is read: {' or '.join(MODES)}.")
    if not entity:
        raise VisitorInputError("Pick or type an entity that appears in the sentence.")
    if len(text) > MAX_TEXT_CHARS:
        raise VisitorInputError(f"The sentence has {len(text):,} characters; the limit is {MAX_TEXT_CHARS}.")
    if len(entity) > MAX_ENTITY_CHARS:
        raise VisitorInputError(f"The entity has {len(entity):,} characters; the limit is {MAX_ENTITY_CHARS}.")
    mode = MODES[mode_label]
    if mode == "context" and entity not in text:
        raise VisitorInputError(f"{entity!r} does not appear in the sentence: in context mode it must, exactly.")
    return text, entity, mode


class EntityLensTab:
    """The lens the tab runs and the handlers its events call (plain values in and out, so tests call them)."""

    def __init__(self, lens: EntityLens):
        self.lens = lens

    @classmethod
    def from_environment(cls) -> EntityLensTab | None:
        """The tab from the Space's configuration (see the module docstring), or None when it is `off`."""
        setting = os.environ.get(ENTITY_LENS_VARIABLE, "").strip()
        if setting.lower() == "off":
            return None
        sources = [part.strip() for part in setting.split(",") if part.strip()] or None
        return cls(EntityLens.from_pretrained(sources))

    def describe(self) -> str:
        vectors = next(iter(self.lens.task_vectors.values()))
        layers = vectors.layers
        return (
            f"Model `{vectors.model}`; task vectors for layers {layers[0]}–{layers[-1]} ({len(layers)} layers), "
            f"modes: {', '.join(self.lens.modes)}."
            + (" The model is a 4-bit quantisation (GGUF from PyPI)." if vectors.record.get("quantization") else "")
        )

    def decode(self, text: str, entity: str, mode_label: str) -> tuple[pd.DataFrame, str]:
        """What each layer decodes for the entity; a table and a one-line summary."""
        text, entity, mode = parse_inputs(text, entity, mode_label)
        if mode not in self.lens.task_vectors:
            raise VisitorInputError(f"This Space has no task vectors for {mode!r} mode; choose another mode.")
        began = time.perf_counter()
        try:
            layers = self.lens.lens(text, entity, mode)
        except EntityLensError as error:
            raise VisitorInputError(str(error)) from None
        seconds = time.perf_counter() - began
        rows = [
            {"layer": item.layer, "decoded mention": item.mention, "exact": "✓" if item.mention == entity else ""}
            for item in layers
        ]
        exact = sum(row["exact"] == "✓" for row in rows)
        summary = (
            f"**{entity}**: {exact} of {len(rows)} layers decode it exactly ({mode} mode, {seconds:.1f} s on this "
            "machine's CPU)."
        )
        return pd.DataFrame(rows, columns=["layer", "decoded mention", "exact"]), summary

    @staticmethod
    def candidates(text: str | None) -> gr.Dropdown:
        """Entity candidates in the sentence: spaCy's named entities when it is installed, else capitalised runs."""
        text = (text or "")[:MAX_TEXT_CHARS]
        try:
            found = [entity.text for entity in _named_entity_recognizer()(text).ents]
        except (ImportError, OSError):
            found = CAPITALISED.findall(text)
        choices = list(dict.fromkeys(name.strip() for name in found if name.strip()))
        return gr.Dropdown(choices=choices, value=choices[0] if choices else None)


@functools.cache
def _named_entity_recognizer():
    import spacy

    return spacy.load(SPACY_MODEL, exclude=["parser", "lemmatizer"])


def visitor_safe(handler):
    """Show visitors a clear message for their own mistakes and a generic one for ours, never a traceback."""

    def wrapped(*args):
        try:
            return handler(*args)
        except VisitorInputError as error:
            raise gr.Error(str(error), title="Please check your input", print_exception=False) from None
        except Exception:
            logger.exception("entity lens handler failed")
            raise gr.Error(
                "Something went wrong on our side; the details are in the Space's logs.", print_exception=False
            ) from None

    return wrapped


def build_tab(tab: EntityLensTab) -> gr.Blocks:
    """The tab's page. Only the sentence, the entity and the mode come from the visitor."""
    with gr.Blocks(title="Entity Lens") as blocks:
        gr.Markdown(
            "# Entity Lens\nWhat does each layer of a language model know about an entity? The lens takes the "
            "entity's hidden state after every layer and makes the model itself **write the entity's name back "
            "out**, with one learned task vector per layer ([Morand et al., 2025](https://arxiv.org/abs/2510.09421))."
            f"\n\n{tab.describe()}"
        )
        with gr.Row():
            text = gr.Textbox(
                label=f"Sentence (up to {MAX_TEXT_CHARS} characters)", max_length=MAX_TEXT_CHARS, lines=2, scale=3
            )
            with gr.Column(scale=2):
                entity = gr.Dropdown(
                    label=f"Entity (pick one found in the sentence, or type it; up to {MAX_ENTITY_CHARS} characters)",
                    choices=[],
                    allow_custom_value=True,
                )
                mode = gr.Radio(list(MODES), value=next(iter(MODES)), label="Read the entity")
                button = gr.Button("Decode every layer", variant="primary")
        summary = gr.Markdown()
        table = gr.Dataframe(label="Decoded mention per layer", interactive=False, wrap=True)
        gr.Examples(EXAMPLES, inputs=[text, entity], label="Examples")
        decode = visitor_safe(tab.decode)
        models = {"concurrency_id": "entity-lens", "concurrency_limit": 1}
        text.change(tab.candidates, text, entity, api_visibility="private")
        button.click(decode, [text, entity, mode], [table, summary], api_name="entity_lens", **models)
    return blocks


def with_entity_lens_tab(rerank_blocks: gr.Blocks) -> gr.Blocks:
    """The re-ranking page and the Entity Lens tab side by side, or the re-ranking page alone when the lens is off or
    cannot be loaded (the reason goes to the logs)."""
    try:
        tab = EntityLensTab.from_environment()
    except EntityLensError as error:
        logger.warning("the Entity Lens tab is left out: %s", error)
        return rerank_blocks
    if tab is None:
        return rerank_blocks
    return gr.TabbedInterface([rerank_blocks, build_tab(tab)], ["Re-ranking", "Entity Lens"], title="mice-rerank")
