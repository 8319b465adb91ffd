"""The card (README.md) of the mice-rerank Gradio Space."""

from __future__ import annotations

import platform
from importlib.metadata import version

from huggingface_hub import SpaceCard, SpaceCardData

from .model_card import CODE_LICENSE, TEMPLATES


def render_space_card(
    *,
    title: str = "MICE re-ranking demo",
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    app_file: str = "app.py",
    short_description: str = "MICE vs cross-encoder re-ranking, with attention maps",
) -> SpaceCard:
    """Render a Space card; `sdk_version` and `python_version` are those of this environment (what the app was tested
    with), `models` / `datasets` are Hub ids the Space loads (they link the Space to them on the Hub)."""
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=version("gradio"),
        python_version=".".join(platform.python_version_tuple()[:2]),
        app_file=app_file,
        license=CODE_LICENSE,
        models=models or None,
        datasets=datasets or None,
        tags=["mice", "reranker", "cross-encoder", "text-ranking"],
        short_description=short_description,
        pinned=False,
    )
    return SpaceCard.from_template(
        card_data, template_path=str(TEMPLATES / "space_card.md"), title=title, models=models or [], app_file=app_file
    )
