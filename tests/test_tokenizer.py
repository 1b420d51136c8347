"""Tokenizers: trained byte-level BPE round-trips real Python losslessly; CodeGen-style local folders load."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest

from phi1lib.errors import ConfigError, DataError
from phi1lib.training.tokenizer import EOT, build_tokenizer, check_vocab_fits, load_tokenizer, train_bpe


def _stdlib_sources() -> list[str]:
    import argparse, json as json_mod, textwrap as tw, string, dataclasses  # noqa: E401
    return [inspect.getsource(m) for m in (argparse, json_mod.decoder, tw, string, dataclasses)]


def _awkward_source() -> str:
    """Real stdlib code re-indented with tabs, with trailing spaces, blank lines and CRLF added."""
    src = inspect.getsource(textwrap.dedent)
    tabbed = "\n".join(("\t" * ((len(l) - len(l.lstrip(" "))) // 4) + l.lstrip(" ")) for l in src.splitlines())
    return tabbed + "   \n\n\n\t\n" + "x = {'a':  1}  \r\n" + "    # mixed\t indent  \n" + "s = 'naïve ✓'\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    train_bpe(_stdlib_sources(), 600, out)
    return out


def test_trained_bpe_reloads_through_autotokenizer_and_round_trips(trained):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(trained))
    assert len(tok) == 600
    assert tok.eos_token == EOT and tok.pad_token == EOT
    samples = _stdlib_sources() + [_awkward_source(), inspect.getsource(json.encoder)]
    assert "\t" in samples[-2] and "   \n" in samples[-2]
    for text in samples:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # BPE learned something: far fewer tokens than bytes on code it was trained on.
    text = samples[0]
    assert len(tok(text)["input_ids"]) < 0.6 * len(text.encode())


def test_newline_is_never_merged_with_the_indentation_after_it(trained):
    """A HumanEval prompt ends in a newline inside a function. If newline + indentation were one token, the
    prompt would end in a token that training text only has before top-level code or end-of-text. With
    newlines apart, every prompt's tokens are a prefix of its prompt + solution tokens: the model continues
    where the training text continues."""
    from phi1lib.problems import load_humaneval

    tok = load_tokenizer(trained)
    texts = [tok.convert_tokens_to_string([t]) for t in tok.get_vocab() if t != EOT]
    assert [t for t in texts if "\n" in t and t != "\n"] == []  # a newline is always a token of its own
    assert any(t == "\n" for t in texts) and any(t.strip() == "" and "\n" not in t and len(t) > 1 for t in texts)
    for p in load_humaneval():
        prompt = tok(p["prompt"], add_special_tokens=False)["input_ids"]
        whole = tok(p["prompt"] + p["canonical_solution"], add_special_tokens=False)["input_ids"]
        assert whole[:len(prompt)] == prompt, p["task_id"]


def test_eot_is_one_special_token_between_documents(trained):
    tok = load_tokenizer(trained)
    ids = tok("a = 1" + EOT + "b = 2", add_special_tokens=False)["input_ids"]
    assert ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids) == "a = 1" + EOT + "b = 2"
    assert tok("def f():", add_special_tokens=False)["input_ids"][0] != tok.eos_token_id  # no BOS added


def test_codegen_style_local_folder_loads(tmp_path, trained):
    """A folder laid out like Salesforce/codegen-350M-mono (vocab.json + merges.txt + config)."""
    from transformers import AutoTokenizer

    src = AutoTokenizer.from_pretrained(str(trained))
    folder = tmp_path / "codegen-local"
    folder.mkdir()
    src.backend_tokenizer.model.save(str(folder))  # writes vocab.json and merges.txt
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CodeGenTokenizer", "add_prefix_space": False, "bos_token": EOT,
        "eos_token": EOT, "unk_token": EOT, "model_max_length": 2048}))
    vocab = json.loads((folder / "vocab.json").read_text())
    assert EOT in vocab
    tok = load_tokenizer(folder)
    assert type(tok).__name__.startswith("CodeGen")
    assert tok.eos_token == EOT and tok.pad_token_id == vocab[EOT]
    text = _awkward_source()
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    check_vocab_fits(tok, 51200)
    with pytest.raises(ConfigError, match="vocab_size is 100"):
        build_tokenizer(str(folder), 100)


def test_hub_id_offline_gives_a_clear_error():
    with pytest.raises(DataError, match="local folder"):
        load_tokenizer("Salesforce/codegen-350M-mono-not-cached-here")


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="258"):
        train_bpe(["x"], 100)
    with pytest.raises(DataError, match="empty"):
        train_bpe(["", "  "], 500)
    f = tmp_path / "tok.json"
    f.write_text("{}")
    with pytest.raises(ConfigError, match="is a file"):
        load_tokenizer(f)
