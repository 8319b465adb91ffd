"""The Gradio Space (spaces/mice-rerank-demo): handlers called directly, the launched app through gradio_client, and
one headless Chromium run that types a query, clicks and reads the rendered ranking.

The app is loaded from its file (``spaces/`` is not a package: ``spaces`` is Hugging Face's own package name). Models
are tiny random BERTs (a MICE-ℓ2+2 and a cross-encoder) given to the app through its environment variables, exactly
as a Space configures them. Every score the app shows is checked against the models called independently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

import gradio as gr
import pytest
import torch
from loaders import load_file
from sentence_transformers import CrossEncoder
from tiny_models import build_tiny_backbone
from transformers import AutoTokenizer

from modeling_mice import MiceForSequenceClassification
from ranking_data.beir import load_beir
from ranking_data.bm25 import BM25Retriever

APP_FILE = Path(__file__).resolve().parents[1] / "spaces" / "mice-rerank-demo" / "app.py"
TOL = 1e-4


def load_app():
    """Import app.py from its path under a private module name."""
    return load_file(APP_FILE, "mice_rerank_demo_app")


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> dict[str, str]:
    """A tiny MICE (from a tiny BERT) and a tiny BERT cross-encoder, saved as model folders with their tokenizer."""
    root = tmp_path_factory.mktemp("space_models")
    backbone = build_tiny_backbone(root, "bert", num_hidden_layers=4)
    cross_encoder = build_tiny_backbone(root, "bert", num_hidden_layers=2, cross_encoder=True, seed=1)
    for folder in (backbone, cross_encoder):  # positions stop at 128: tell the tokenizer so it truncates there
        AutoTokenizer.from_pretrained(folder, model_max_length=128).save_pretrained(folder)
    torch.manual_seed(0)
    mice = MiceForSequenceClassification.from_backbone(str(backbone), fusion_layer=2, interaction_layers=2)
    mice_folder = root / "mice"
    mice.save_pretrained(mice_folder)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(mice_folder)
    return {"MICE_SPACE_MICE_MODEL": str(mice_folder), "MICE_SPACE_CROSS_ENCODER_MODEL": str(cross_encoder)}


@pytest.fixture(scope="module")
def demo(app, model_folders):
    with pytest.MonkeyPatch.context() as patch:
        for variable, folder in model_folders.items():
            patch.setenv(variable, folder)
        patch.delenv("MICE_SPACE_PREENCODE", raising=False)
        return app.RerankDemo.from_environment()


@pytest.fixture(scope="module")
def reference(model_folders):
    """The two models loaded independently of the app, to check the scores it shows."""
    mice_folder = model_folders["MICE_SPACE_MICE_MODEL"]
    mice = MiceForSequenceClassification.from_pretrained(mice_folder).eval()
    cross_encoder = CrossEncoder(model_folders["MICE_SPACE_CROSS_ENCODER_MODEL"], activation_fn=torch.nn.Identity())
    return mice, AutoTokenizer.from_pretrained(mice_folder), cross_encoder


def mice_scores_one_by_one(reference, query: str, texts: list[str]) -> list[float]:
    """MICE on each (query, document) pair alone, through the separate-inputs path: no cache, no batch padding."""
    mice, tokenizer, _ = reference
    scores = []
    with torch.inference_mode():
        for text in texts:
            inputs = {**mice.tokenize_queries(tokenizer, [query]), **mice.tokenize_documents(tokenizer, [text])}
            scores.append(mice(**inputs).logits[0, 0].item())
    return scores


def assert_close(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    assert max(abs(a - e) for a, e in zip(actual, expected, strict=True)) <= TOL


# ---------------------------------------------------------------------------------------------------------------
# Configuration: models only from the environment or the quickstart's folders
# ---------------------------------------------------------------------------------------------------------------


def test_models_come_from_the_environment(demo, model_folders):
    assert demo.mice_name == model_folders["MICE_SPACE_MICE_MODEL"]
    assert demo.cross_encoder_name == model_folders["MICE_SPACE_CROSS_ENCODER_MODEL"]


def test_default_is_the_quickstart_folder_with_a_clear_error_when_missing(app, monkeypatch, tmp_path):
    monkeypatch.delenv("MICE_SPACE_MICE_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"mice quickstart.*MICE_SPACE_MICE_MODEL"):
        app.resolve_model("MICE_SPACE_MICE_MODEL", app.QUICKSTART_MODELS / "mice")
    (tmp_path / "mice-quickstart" / "models" / "mice").mkdir(parents=True)
    assert app.resolve_model("MICE_SPACE_MICE_MODEL", app.QUICKSTART_MODELS / "mice") == str(
        Path("mice-quickstart") / "models" / "mice"
    )


def test_a_model_of_the_wrong_kind_is_refused(app, model_folders):
    with pytest.raises(ValueError, match="must name a MICE model"):
        app.load_mice(model_folders["MICE_SPACE_CROSS_ENCODER_MODEL"])
    with pytest.raises(ValueError, match="must name the full cross-encoder"):
        app.load_cross_encoder(model_folders["MICE_SPACE_MICE_MODEL"])


def test_the_page_offers_no_way_to_choose_a_model(app, demo):
    blocks = app.build_demo(demo)
    inputs = {id(component) for dependency in blocks.fns.values() for component in dependency.inputs}
    textboxes = [c for c in blocks.blocks.values() if isinstance(c, gr.Textbox) and id(c) in inputs]
    assert sorted(t.label.split(" (")[0].split(":")[0] for t in textboxes) == ["Query", "Your passages"]
    assert not any(isinstance(c, (gr.File, gr.UploadButton)) for c in blocks.blocks.values())


# ---------------------------------------------------------------------------------------------------------------
# Handlers called directly
# ---------------------------------------------------------------------------------------------------------------


def test_builtin_corpus_scores_match_the_models_called_independently(app, demo, reference, sample_data):
    query = app.EXAMPLE_QUERIES[0]
    comparison = demo.compare_builtin(query)

    corpus = load_beir(sample_data, "test")
    run = BM25Retriever().index(corpus.corpus).search({"q": query}, k=app.BUILTIN_CANDIDATES)["q"]
    assert comparison.doc_ids == sorted(run, key=run.get, reverse=True)
    assert_close(comparison.rankings["BM25"].scores, [run[d] for d in comparison.doc_ids])

    texts = [corpus.document_text(d) for d in comparison.doc_ids]
    cross_encoder = reference[2].predict([(query, t) for t in texts], show_progress_bar=False)
    assert_close(comparison.rankings["Cross-encoder"].scores, [float(s) for s in cross_encoder])
    # MICE scored the cached, concatenated states: it must equal MICE on each pair alone.
    assert_close(comparison.rankings["MICE"].scores, mice_scores_one_by_one(reference, query, texts))

    # An example query's candidates were all encoded at start-up, and the summary says so.
    assert (comparison.preencoded, comparison.encoded_now) == (app.BUILTIN_CANDIDATES, 0)
    assert comparison.encoding_seconds_saved > 0
    assert comparison.relevant == {"activemq"}
    summary = app.summary_markdown(comparison)
    assert f"{app.BUILTIN_CANDIDATES} of the {app.BUILTIN_CANDIDATES} candidates already encoded" in summary


def test_documents_not_encoded_in_advance_are_encoded_once_then_cached(app, demo):
    query = "bluez obex daemon"  # a test query, not an example: its candidates were not pre-encoded
    first = demo.compare_builtin(query)
    assert first.encoded_now > 0
    assert first.preencoded + first.encoded_now == len(first.doc_ids)
    if first.preencoded:
        assert f"and encoded {first.encoded_now} others now" in app.summary_markdown(first)
    else:
        assert "None of these 20 candidates had been encoded in advance" in app.summary_markdown(first)
    again = demo.compare_builtin(query)
    assert (again.preencoded, again.encoded_now) == (len(first.doc_ids), 0)
    assert again.rankings["MICE"].scores == first.rankings["MICE"].scores
    assert all(d in demo.cache for d in first.doc_ids)


def test_pasted_passages_ranked_by_the_three_systems(app, demo, reference):
    query = "cats purr when they are content"
    passages = ["dogs bark at strangers", "a cat purrs when content", "the stock market fell today", "cats"]
    comparison = demo.compare_passages(query, passages)
    assert comparison.doc_ids == ["passage 1", "passage 2", "passage 3", "passage 4"]
    # BM25 over the pasted passages: no shared term with "dogs ..." or "the stock market ...", so score 0.
    bm25 = comparison.rankings["BM25"]
    assert bm25.scores[0] == bm25.scores[2] == 0.0 and bm25.scores[1] > bm25.scores[3] > 0
    assert bm25.order() == [1, 3, 0, 2]  # ties keep the pasted order
    cross_encoder = reference[2].predict([(query, p) for p in passages], show_progress_bar=False)
    assert_close(comparison.rankings["Cross-encoder"].scores, [float(s) for s in cross_encoder])
    assert_close(comparison.rankings["MICE"].scores, mice_scores_one_by_one(reference, query, passages))
    assert (comparison.preencoded, comparison.encoded_now) == (0, 4)
    assert "MICE encoded the 4 pasted passages on the fly" in app.summary_markdown(comparison)


def test_rerank_handler_tables_show_rank_changes_against_bm25(app, demo):
    handlers = app.DemoHandlers(demo)
    summary, bm25, cross_encoder, mice, choice, state, figure = handlers.rerank(
        "  Java message broker - server ", app.BUILTIN_SOURCE, "ignored for the built-in corpus"
    )
    assert "Latency on this machine's CPU" in summary and "Kendall τ" in summary
    comparison = demo.compare_builtin("Java message broker - server")
    bm25_rank = {comparison.doc_ids[i]: rank for rank, i in enumerate(comparison.rankings["BM25"].order(), 1)}
    for table, name in ((bm25, "BM25"), (cross_encoder, "Cross-encoder"), (mice, "MICE")):
        assert table.label.startswith(f"{name} · ") and table.label.endswith(" ms")
        rows = table.value["data"]
        assert [row[0] for row in rows] == list(range(1, app.BUILTIN_CANDIDATES + 1))
        assert [row[2] for row in rows] == sorted((row[2] for row in rows), reverse=True)
        for rank, change, _, document in rows:
            doc_id = document.removeprefix("✓ ").split(": ", 1)[0]
            assert change == ("" if name == "BM25" else app.rank_change(bm25_rank[doc_id], rank))
    assert sum(row[3].startswith("✓ activemq: ") for row in bm25.value["data"]) == 1
    assert choice.value == choice.choices[0][0] and choice.value.startswith("MICE #1: ")
    assert mice.value["data"][0][3].removeprefix("✓ ").startswith(choice.value.removeprefix("MICE #1: ") + ": ")
    assert state["query"] == "Java message broker - server" and len(state["documents"]) == app.BUILTIN_CANDIDATES
    assert figure.axes


def test_summary_figures_computed_by_hand(app):
    rankings = {
        "BM25": app.SystemRanking("BM25", [3.0, 2.0, 1.0], 0.0012),
        "Cross-encoder": app.SystemRanking("Cross-encoder", [0.1, 0.5, 0.9], 0.600),
        "MICE": app.SystemRanking("MICE", [0.2, 0.3, 0.1], 0.050),
    }
    comparison = app.Comparison(
        "q", ["a", "b", "c"], ["A", "B", "C"], rankings, preencoded=2, encoded_now=1, encoding_seconds_saved=0.3
    )
    summary = app.summary_markdown(comparison)
    assert "BM25 **1 ms** · Cross-encoder **600 ms** · MICE **50 ms**" in summary
    assert (
        "found 2 of the 3 candidates already encoded (document states computed in advance), and encoded 1 other now"
        in summary
    )
    assert "would have added ≈300 ms (measured when they were encoded): MICE took 50 ms instead of ≈350 ms" in summary
    assert "**12.0×** as fast as the cross-encoder" in summary
    # MICE orders b, a, c; the cross-encoder c, b, a. Pairs: (a,b) concordant, (a,c) and (b,c) discordant:
    # tau = (1 - 2) / 3.
    assert "Kendall τ -0.33, 3 of the top 3 in common" in summary
    rankings["MICE"] = app.SystemRanking("MICE", [0.5, 0.5, 0.5], 0.050)
    assert "Kendall τ undefined (all scores tied)" in app.summary_markdown(comparison)


def test_rank_change_marks():
    app = load_app()
    assert [app.rank_change(3, 1), app.rank_change(1, 4), app.rank_change(2, 2)] == ["▲2", "▼3", "="]


def test_heatmap_rows_are_each_query_tokens_attention_over_the_document(app, demo, reference):
    mice, tokenizer, _ = reference
    query, document = "purring cats", "a cat purrs when it is content"
    figure = demo.attention_figure(query, document, "passage 1")
    heatmaps = [axis for axis in figure.axes if axis.images and axis.get_title().startswith("interaction layer")]
    assert [axis.get_title() for axis in heatmaps] == [
        "interaction layer 2 (mean of heads)",
        "interaction layer 3 (mean of heads)",
    ]
    query_tokens = tokenizer.convert_ids_to_tokens(mice.tokenize_queries(tokenizer, [query])["query_input_ids"][0])
    document_tokens = tokenizer.convert_ids_to_tokens(
        mice.tokenize_documents(tokenizer, [document])["document_input_ids"][0]
    )
    for axis in heatmaps:
        values = torch.tensor(axis.images[0].get_array())
        assert values.shape == (len(query_tokens), len(document_tokens))  # a short document: every token shown
        assert [t.get_text() for t in axis.get_yticklabels()] == query_tokens
        assert [t.get_text() for t in axis.get_xticklabels()] == document_tokens
        # The query [CLS] may not cross-attend; every other query token spreads exactly 1 over the document.
        assert values[0].abs().sum() == 0
        assert torch.allclose(values[1:].sum(dim=1), torch.ones(len(query_tokens) - 1), atol=1e-5)
    score = mice_scores_one_by_one(reference, query, [document])[0]
    assert f"MICE score {score:.3f}" in figure.texts[0].get_text()


def test_attention_handler_uses_the_last_ranking(app, demo):
    handlers = app.DemoHandlers(demo)
    *_, choice, state, _ = handlers.rerank("cats", app.PASTED_SOURCE, "a cat\n\nthe cat sat on the mat\n")
    assert set(state["documents"].values()) == {"a cat", "the cat sat on the mat"}
    label = choice.choices[1][0]
    figure = handlers.attention(label, state)
    assert figure.texts[0].get_text().startswith(f"{label}: MICE score")
    with pytest.raises(app.VisitorInputError, match="Rank a query first"):
        handlers.attention(label, None)


# ---------------------------------------------------------------------------------------------------------------
# Limits and errors
# ---------------------------------------------------------------------------------------------------------------


def test_passages_are_one_per_line_within_the_limits(app):
    assert app.parse_passages("first\n\n  second  \n\n\nthird") == ["first", "second", "third"]
    assert len(app.parse_passages("\n".join(["p"] * app.MAX_PASSAGES))) == app.MAX_PASSAGES
    with pytest.raises(app.VisitorInputError, match="51 passages; the limit is 50"):
        app.parse_passages("\n".join(["p"] * (app.MAX_PASSAGES + 1)))
    with pytest.raises(app.VisitorInputError, match="Passage 2 has 2,001 characters; the limit is 2,000"):
        app.parse_passages("short\n" + "x" * (app.MAX_PASSAGE_CHARS + 1))
    assert app.parse_passages("x" * app.MAX_PASSAGE_CHARS) == ["x" * app.MAX_PASSAGE_CHARS]
    with pytest.raises(app.VisitorInputError, match="Paste at least one passage"):
        app.parse_passages(" \n\n ")


def test_query_limits(app):
    assert app.parse_query("  cats  ") == "cats"
    assert app.parse_query("q" * app.MAX_QUERY_CHARS) == "q" * app.MAX_QUERY_CHARS
    for empty in ("", "   ", None):
        with pytest.raises(app.VisitorInputError, match="Enter a query"):
            app.parse_query(empty)
    with pytest.raises(app.VisitorInputError, match="301 characters; the limit is 300"):
        app.parse_query("q" * (app.MAX_QUERY_CHARS + 1))


def test_visitor_sees_clear_messages_and_never_a_traceback(app, demo, caplog):
    rerank = app.visitor_safe(app.DemoHandlers(demo).rerank)
    with pytest.raises(gr.Error, match="Enter a query"):
        rerank("", app.BUILTIN_SOURCE, "")
    with pytest.raises(gr.Error, match="the limit is 50"):
        rerank("cats", app.PASTED_SOURCE, "\n".join(["cat"] * 51))
    with pytest.raises(gr.Error, match="BM25 found no document sharing a word"):
        rerank("the of and", app.BUILTIN_SOURCE, "")  # stopwords only: nothing to re-rank

    def broken(query):
        raise RuntimeError("internal detail /secret/path")

    with caplog.at_level(logging.ERROR, logger="mice_space"), pytest.raises(gr.Error) as raised:
        app.visitor_safe(broken)("cats")
    assert "went wrong on our side" in raised.value.message and "secret" not in raised.value.message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert "internal detail /secret/path" in caplog.text  # the details go to the Space's logs


def test_unknown_preencode_setting_is_refused(app, model_folders, monkeypatch):
    for variable, folder in model_folders.items():
        monkeypatch.setenv(variable, folder)
    monkeypatch.setenv("MICE_SPACE_PREENCODE", "some")
    with pytest.raises(ValueError, match="MICE_SPACE_PREENCODE='some': use 'examples' or 'all'"):
        app.RerankDemo.from_environment()


# ---------------------------------------------------------------------------------------------------------------
# The launched app: gradio_client and a real browser
# ---------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def launched(app, demo):
    """The app served on a free local port; yields its URL."""
    blocks = app.build_demo(demo)
    port = free_port()
    blocks.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        blocks.close()


@pytest.fixture(scope="module")
def served(app, demo):
    with launched(app, demo) as url:
        yield url


@pytest.fixture(scope="module")
def browser_app(app, demo, served):
    """The app the browser test drives: the tiny models, or for the README's screenshot the models named by
    MICE_SPACE_SCREENSHOT_MICE_MODEL and MICE_SPACE_SCREENSHOT_CROSS_ENCODER_MODEL (e.g. the quickstart's)."""
    mice, cross_encoder = (os.environ.get(f"MICE_SPACE_SCREENSHOT_{k}_MODEL") for k in ("MICE", "CROSS_ENCODER"))
    if not (mice and cross_encoder):
        yield demo, served
        return
    screenshot_demo = app.RerankDemo(mice, cross_encoder)
    with launched(app, screenshot_demo) as url:
        yield screenshot_demo, url


def test_launched_app_through_gradio_client(app, demo, served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(served, verbose=False)
    query = app.EXAMPLE_QUERIES[1]
    summary, bm25, cross_encoder, mice, choice, plot = client.predict(query, app.BUILTIN_SOURCE, "", api_name="/rerank")
    comparison = demo.compare_builtin(query)
    # A table comes back as the component's update: its label (with the latency) and its value.
    assert bm25["label"].startswith("BM25 · ") and mice["label"].startswith("MICE · ")
    assert bm25["value"]["headers"] == ["#", "vs BM25", "score", "document"]
    assert [row[3].split(": ", 1)[0] for row in bm25["value"]["data"]] == comparison.doc_ids
    expected = [round(comparison.rankings["MICE"].scores[i], 3) for i in comparison.rankings["MICE"].order()]
    assert [row[2] for row in mice["value"]["data"]] == expected
    assert "Latency on this machine's CPU" in summary
    assert choice["value"] == f"MICE #1: {comparison.doc_ids[comparison.rankings['MICE'].order()[0]]}"
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")

    # The heatmap for another result, in the same session (the ranking is kept in the session's state).
    second = f"MICE #2: {comparison.doc_ids[comparison.rankings['MICE'].order()[1]]}"
    heatmap = client.predict(second, api_name="/attention")
    assert heatmap["type"] == "matplotlib" and heatmap["plot"] != plot["plot"]

    with pytest.raises(AppError, match="Enter a query"):
        client.predict("   ", app.BUILTIN_SOURCE, "", api_name="/rerank")
    with pytest.raises(AppError, match="Passage 1 has 2,001 characters"):
        client.predict("cats", app.PASTED_SOURCE, "x" * 2001, api_name="/rerank")


def chromium_executable() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it, so CI runs this test")


@pytest.mark.browser
def test_browser_types_a_query_clicks_and_reads_the_ranking(app, browser_app, tmp_path):
    demo, served = browser_app
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    executable = chromium_executable()
    query, example = app.EXAMPLE_QUERIES[0], app.EXAMPLE_QUERIES[1]
    example_top = demo.compare_builtin(example)
    example_top = example_top.doc_ids[example_top.rankings["MICE"].order()[0]]
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=executable,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served)
            page.get_by_label(f"Query (up to {app.MAX_QUERY_CHARS} characters)").fill(query)
            page.get_by_role("button", name="Rank", exact=True).click()
            page.get_by_text("Agreement with the cross-encoder").wait_for(timeout=60_000)
            page.get_by_text("activemq: Apache ActiveMQ").first.wait_for(timeout=30_000)
            text = page.inner_text("body")
            picked = page.get_by_label("Heatmap for result").input_value()
            # Keep the screenshot for the README when asked (MICE_SPACE_SCREENSHOT=path), else in tmp_path.
            screenshot = Path(os.environ.get("MICE_SPACE_SCREENSHOT") or tmp_path / "space.png")
            page.screenshot(path=str(screenshot), full_page=True)
            # One click on an example fills the inputs and ranks them.
            page.get_by_text(f"{example} (built-in corpus)").click()
            picker = page.get_by_label("Heatmap for result")
            playwright.expect(picker).to_have_value(f"MICE #1: {example_top}", timeout=60_000)
            playwright.expect(page.get_by_label(f"Query (up to {app.MAX_QUERY_CHARS} characters)")).to_have_value(
                example
            )
        finally:
            browser.close()
    comparison = demo.compare_builtin(query)
    for name in app.SYSTEMS:
        assert f"{name} · " in text
    for doc_id in comparison.doc_ids[:3]:
        assert f"{doc_id}: " in text
    assert "✓ activemq: Apache ActiveMQ" in text
    assert picked == f"MICE #1: {comparison.doc_ids[comparison.rankings['MICE'].order()[0]]}"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# The Space's files
# ---------------------------------------------------------------------------------------------------------------


def test_space_card_front_matter_matches_the_tested_environment():
    from huggingface_hub import SpaceCard

    folder = APP_FILE.parent
    card = SpaceCard.load(folder / "README.md")
    data = card.data
    assert (data.sdk, data.sdk_version, data.app_file) == ("gradio", gr.__version__, APP_FILE.name)
    assert data.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert len(data.short_description) <= 60  # the Hub's limit
    assert data.models and data.license == "apache-2.0" and "reranker" in data.tags
    assert "](screenshot.png)" in card.text and (folder / "screenshot.png").read_bytes()[:4] == b"\x89PNG"
    # `spaces` is Hugging Face's own package name: this folder must never become an importable package.
    assert not (folder.parent / "__init__.py").exists() and not (folder / "__init__.py").exists()


def test_main_explains_what_to_do_when_no_model_is_configured(app, monkeypatch, tmp_path):
    # What `python spaces/mice-rerank-demo/app.py` does in a folder without the quickstart's models.
    for variable in ("MICE_SPACE_MICE_MODEL", "MICE_SPACE_CROSS_ENCODER_MODEL", "MICE_SPACE_PREENCODE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        app.main()
    assert str(exited.value).startswith("mice-rerank-demo: No model at ")
    assert "run `mice quickstart`" in str(exited.value)
