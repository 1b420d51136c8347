"""The local transformers provider on a tiny random PhiForCausalLM saved to a folder: batching, stop strings, store."""

from __future__ import annotations

import pytest

from phi1lib.errors import ConfigError
from phi1lib.llm import LLMClient, Request, TransformersProvider
from phi1lib.llm.tokens import TokenCounter

# Loading torch + transformers dominates (~20 s on a busy 2-core box).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-phi")
    corpus = ["def add(a, b):\n    return a + b\n", "class Stack:\n    def push(self, x):\n        self.items.append(x)\n"] * 50
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    hf_tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = PhiConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=128, partial_rotary_factor=0.5,
                       eos_token_id=hf_tok.eos_token_id, bos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.eos_token_id)
    model = PhiForCausalLM(config)
    with torch.no_grad():  # sharper logits so greedy decoding is not decided by rounding noise
        model.lm_head.weight.mul_(20)
    model.save_pretrained(folder)
    return folder


def greedy_reference(folder, prompt, max_new):
    """One prompt, no padding, straight transformers: what batched generation must reproduce."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder).eval()
    enc = tok(prompt, return_tensors="pt")
    out = lm.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.eos_token_id)
    ids = out[0, enc["input_ids"].shape[1]:].tolist()
    if tok.eos_token_id in ids:
        ids = ids[: ids.index(tok.eos_token_id)]
    return tok.decode(ids, skip_special_tokens=True)


def test_batched_generation_matches_one_by_one(model_dir, tmp_path):
    prompts = ["def add(a, b):", "class Stack:\n    def push(self, x):", "def", "return a"]
    provider = TransformersProvider(model_dir, batch_size=3, device="cpu")
    client = LLMClient(provider, store=tmp_path / "local.sqlite", progress=False)
    results = client.generate([Request(prompt=p, max_tokens=12) for p in prompts])
    for p, r in zip(prompts, results):
        assert r.ok and r.usd == 0 and r.completion_tokens <= 12
        assert r.text == greedy_reference(model_dir, p, 12)
        assert r.prompt_tokens == len(provider.tokenizer.encode(p))
    again = client.generate([Request(prompt=p, max_tokens=12) for p in prompts])
    assert all(r.cached for r in again)


def test_stop_strings_cut_the_text(model_dir, tmp_path):
    provider = TransformersProvider(model_dir, batch_size=4, device="cpu")
    client = LLMClient(provider, store=tmp_path / "stop.sqlite", progress=False)
    [free] = client.generate([Request(prompt="def add(a, b):", max_tokens=16)])
    assert len(free.text) >= 4
    stop = free.text[2:4]  # a string the model is known to produce
    [cut] = client.generate([Request(prompt="def add(a, b):", max_tokens=16, stop=[stop])])
    assert cut.text == free.text[: free.text.index(stop)] and cut.finish_reason == "stop"
    # A different stop list in the same batch must not cut other rows.
    mixed = client.generate([Request(prompt="def add(a, b):", max_tokens=16, stop=["\u2603"]),
                             Request(prompt="def add(a, b):", max_tokens=16, stop=[stop])])
    assert mixed[0].text == free.text and mixed[1].text == cut.text


def test_chat_messages_and_dry_run_use_the_model_tokenizer(model_dir, tmp_path):
    provider = TransformersProvider(model_dir, device="cpu")
    client = LLMClient(provider, store=tmp_path / "chat.sqlite", progress=False)
    req = Request(messages=[{"role": "user", "content": "def add(a, b):"}], max_tokens=5)
    est = client.dry_run([req])
    assert est.cost_usd == 0 and "model tokenizer" in est.lines[-1].detail
    [res] = client.generate([req])
    assert res.ok and res.prompt_tokens == len(provider.tokenizer.encode(provider.prompt_text(req)))


def test_missing_model_folder_is_a_clear_error(tmp_path):
    provider = TransformersProvider(tmp_path / "nope")
    with pytest.raises(ConfigError, match="nope"):
        LLMClient(provider, store=tmp_path / "x.sqlite", progress=False)


def test_token_counter_with_a_model_tokenizer_is_exact(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["def add(a, b): return a + b"] * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    counter = TokenCounter(tokenizer=hf)
    assert counter.exact and "model tokenizer" in counter.method
    assert counter.count_text("def add(a, b)") == len(hf.encode("def add(a, b)", add_special_tokens=False))
