"""Tiny random causal LMs (Llama, Gemma-3) with a small cased byte-level BPE tokenizer, saved as model folders, for
fast offline Entity Lens tests.

    folder = build_tiny_causal_lm(tmp_path, "llama")   # LlamaForCausalLM + tokenizer
    model, tokenizer = load_causal_lm(str(folder))
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, PreTrainedTokenizerFast

FAMILIES = ("llama", "gemma3")
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CORPUS = [
    "Barack Obama was born in Honolulu, Hawaii, and served as president of the United States.",
    "Paris is the capital of France; Berlin is the capital of Germany and Rome the capital of Italy.",
    "Marie Curie worked in Paris. Albert Einstein was born in Ulm and worked in Bern and Princeton.",
    "The Amazon River flows through Brazil, Peru and Colombia into the Atlantic Ocean.",
    "Ada Lovelace wrote about the Analytical Engine of Charles Babbage in London.",
    "_ > the quick brown fox jumps over the lazy dog; Tokyo, Madrid, Lisbon, Cairo and Nairobi are cities.",
]


@cache
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A cased byte-level BPE of about 400 tokens trained on a few sentences, with offsets like GPT-2's."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_config(family: str, num_hidden_layers: int = 3):
    tokenizer = tiny_tokenizer()
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        # Untied and widely initialised, so that greedy decoding does not just repeat one token.
        "tie_word_embeddings": False,
        "initializer_range": 0.3,
    }
    if family == "llama":
        return LlamaConfig(**common, architectures=["LlamaForCausalLM"])
    if family == "gemma3":
        # A sliding window shorter than the prompts, and logit soft-capping, so both code paths run.
        return Gemma3TextConfig(
            **common,
            head_dim=8,
            sliding_window=4,
            final_logit_softcapping=5.0,
            layer_types=(["sliding_attention", "full_attention"] * num_hidden_layers)[:num_hidden_layers],
            architectures=["Gemma3ForCausalLM"],
        )
    raise ValueError(f"unknown family {family!r}: use one of {FAMILIES}")


def build_tiny_causal_lm(root: Path, family: str, num_hidden_layers: int = 3, seed: int = 0) -> Path:
    """Save a tiny random causal LM of `family` and its tokenizer under `root/family`; returns the folder."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, num_hidden_layers))
    folder = Path(root) / f"{family}-{num_hidden_layers}"
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
