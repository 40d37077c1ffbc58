"""An offline tokenizer for GuideLLM's synthetic data on the local runtime (no model hub at run time).

A small byte-level BPE trained in about a second; GuideLLM only needs it to size prompts in tokens.
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def make_tokenizer(out: Path, vocab_size: int = 4000) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # deferred: loads tokenizers

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(889)
    words = ["cache", "token", "model", "serving", "prefix", "block", "route", "index", "memory", "offload",
             "latency", "throughput", "request", "replica", "schedule", "value", "the", "a", "of", "and"]
    corpus = (" ".join(f"{rng.choice(words)}{rng.randint(0, 99)}" for _ in range(64)) for _ in range(4000))
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
        "model_max_length": 1_000_000, "clean_up_tokenization_spaces": False,
    }, indent=2))
    return out
