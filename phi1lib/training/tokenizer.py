"""Tokenizers: a byte-level BPE trained on the training text (tiny) or CodeGen-350M-mono's (GPU presets).

Both come back as a `transformers` fast tokenizer with `<|endoftext|>` as EOS (and as pad,
since packed blocks never need padding for training). The trained BPE is lossless on Python
source: byte-level pre-tokenization keeps every space, tab and newline, and decoding never
"cleans up" spaces around punctuation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError, DataError, MissingDependency

EOT = "<|endoftext|>"
TRAINED_BPE = "bpe-train"  # the preset value meaning "train our own byte-level BPE"
# How train_bpe splits text before merging; a saved BPE made another way is not the same tokenizer (record it
# in whatever decides whether a trained tokenizer folder is reused).
BPE_FORMAT = "bytelevel+isolated-newline-v1"
CODEGEN_TOKENIZER = "Salesforce/codegen-350M-mono"


def code_pre_tokenizer():
    """Newlines apart, then GPT-2's byte-level split (add_prefix_space=False: a leading space is data).

    Every newline is its own pre-token (and token), so no merge joins a newline to the indentation or the
    blank line after it.
    GPT-2's rule alone makes "\\n" + "   " one token mid-code; a lone "\\n" then only ever precedes
    top-level code or the end of a document, and a HumanEval prompt (which ends in a newline inside
    a function) is cut where the training text never is: a small model's likeliest next token there
    was <|endoftext|> (p 0.22) or "def" (0.24). Split, the prompt's last token is "\\n" as on every line.
    """
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike | None = None,
              *, min_frequency: int = 2):
    """Train a byte-level BPE of `vocab_size` tokens (EOT included) on `texts`.

    Returns a `PreTrainedTokenizerFast`; with `out_dir` it is also saved there
    (`save_pretrained`), so `AutoTokenizer.from_pretrained(out_dir)` reloads it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257 + 1:
        raise ConfigError(f"vocab_size={vocab_size}: a byte-level BPE needs at least 258 tokens "
                          "(256 bytes + <|endoftext|> + merges)")
    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise DataError("no training text for the tokenizer: every record's `text` is empty")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = code_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable, even unseen ones
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=EOT,
        clean_up_tokenization_spaces=False,  # keeps " ," and " ." exactly as written
        model_max_length=int(1e9),
    )
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(name_or_path: str | os.PathLike):
    """A fast tokenizer from a hub id or a local folder, with EOT as eos and pad.

    Offline (HF_HUB_OFFLINE=1, as in CI) a hub id that is not cached fails with a message
    saying to pass a local folder instead.
    """
    from transformers import AutoTokenizer

    src = str(name_or_path)
    local = Path(src).expanduser()
    if local.exists() and not local.is_dir():
        raise ConfigError(f"tokenizer {src!r} is a file; pass a folder written by save_pretrained or a hub id")
    try:
        tok = AutoTokenizer.from_pretrained(str(local) if local.is_dir() else src, use_fast=True)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"could not load tokenizer {src!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            f"pass a local folder holding tokenizer.json or vocab.json+merges.txt, or a hub id "
            f"such as {CODEGEN_TOKENIZER!r} with network access (HF_HUB_OFFLINE unset)") from exc
    if not getattr(tok, "is_fast", False):  # pragma: no cover - every tokenizer we use has a fast variant
        raise MissingDependency(f"tokenizer {src!r} has no fast (Rust) variant; install `tokenizers`")
    return _with_eot(tok, src)


def _with_eot(tok, src: str):
    eot_id = tok.convert_tokens_to_ids(EOT)
    if eot_id is None or eot_id == tok.unk_token_id and tok.unk_token != EOT:
        raise DataError(f"tokenizer {src!r} has no {EOT!r} token; packing needs it between documents")
    if tok.eos_token != EOT:
        tok.eos_token = EOT
    if tok.pad_token is None:
        tok.pad_token = EOT
    tok.clean_up_tokenization_spaces = False
    tok.model_max_length = int(1e9)  # blocks are cut by packing, not by the tokenizer
    return tok


def check_vocab_fits(tokenizer, vocab_size: int) -> None:
    """The model's embedding must have a row for every token id (CodeGen: 50295 ids in 51200 rows)."""
    if len(tokenizer) > vocab_size:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}; "
                          "use a preset with a larger vocab or a smaller tokenizer")


def build_tokenizer(preset_tokenizer: str, vocab_size: int, texts: Iterable[str] | None = None,
                    out_dir: str | os.PathLike | None = None):
    """The tokenizer a preset asks for: train a BPE on `texts` ("bpe-train") or load a hub id/folder."""
    if preset_tokenizer == TRAINED_BPE:
        if texts is None:
            raise ConfigError("tokenizer 'bpe-train' needs training texts")
        tok = train_bpe(texts, vocab_size, out_dir)
    else:
        tok = load_tokenizer(preset_tokenizer)
        if out_dir is not None:
            tok.save_pretrained(str(out_dir))
    check_vocab_fits(tok, vocab_size)
    return tok
