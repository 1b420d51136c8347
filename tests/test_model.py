"""Model presets: exact parameter counts on the meta device, PhiConfig mapping, attention choice."""

from __future__ import annotations

import pytest

from phi1lib import budget
from phi1lib.training.model import build_model, count_params, model_info, phi_config, pick_attention
from phi1lib.presets import PRESET_NAMES, get_preset


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_param_count_formula_matches_real_phi_on_meta(name):
    spec = get_preset(name).model
    model = build_model(spec, device="meta")
    assert next(model.parameters()).device.type == "meta"
    assert count_params(model) == spec.n_params()


def test_paper_sizes():
    def n(name):
        return count_params(build_model(get_preset(name).model, device="meta"))

    assert n("phi1") == 1_418_270_720  # microsoft/phi-1, "1.3B"
    assert 340e6 < n("phi1-small") < 370e6  # "350M"
    assert 0.8e6 < n("tiny") < 1.6e6  # "~1M"


def test_phi_config_mapping():
    spec = get_preset("phi1").model
    cfg = phi_config(spec, eos_token_id=50256)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (24, 2048, 8192, 32)
    rope = getattr(cfg, "rope_parameters", None) or {}
    assert rope.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", None)) == 0.5  # 32 of 64 dims
    assert cfg.tie_word_embeddings is False and cfg.hidden_act == "gelu_new"
    assert cfg.attention_dropout == cfg.resid_pdrop == 0.1
    assert cfg.eos_token_id == cfg.pad_token_id == 50256


def test_tiny_trains_in_train_mode_with_dropout_and_is_deterministic_in_eval():
    import torch

    spec = get_preset("tiny").model
    model = build_model(spec, seed=0)
    x = torch.randint(0, spec.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    model.train()
    a, b = model(input_ids=x).logits, model(input_ids=x).logits
    assert not torch.allclose(a, b)  # dropout 0.1 is active
    model.eval()
    c, d = model(input_ids=x).logits, model(input_ids=x).logits
    assert torch.equal(c, d)
    assert build_model(spec, seed=0).state_dict()["lm_head.weight"].equal(build_model(spec, seed=0).state_dict()["lm_head.weight"])


def test_attention_choice(monkeypatch):
    import phi1lib.training.model as m

    impl, why = pick_attention("cpu")
    assert impl == "sdpa" and "CUDA" in why
    monkeypatch.setattr(m, "flash_attn_available", lambda: False)
    impl, why = pick_attention("cuda")
    assert impl == "sdpa" and "flash-attn is not installed" in why
    from phi1lib.errors import MissingDependency

    with pytest.raises(MissingDependency, match="pip install"):
        pick_attention("cuda", "flash_attention_2")
    monkeypatch.setattr(m, "flash_attn_available", lambda: True)
    assert pick_attention("cuda")[0] == "flash_attention_2"


def test_model_info_reports_flops_and_gpu_hours():
    info = model_info("phi1")
    spec = get_preset("phi1").model
    assert info["params"] == 1_418_270_720 == info["params_formula"]
    assert info["pretrain"]["flops_per_token"] == budget.flops_per_token(spec, 2048)
    # Paper: ~770 GPU-hours at ~49% MFU; the preset assumes 50% -> same order of magnitude.
    assert 600 < info["pretrain"]["gpu_hours"] < 1000


def test_model_info_cli_json(capsys):
    import json

    from phi1lib.cli import main

    assert main(["model-info", "--preset", "phi1-small", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == get_preset("phi1-small").model.n_params()


@pytest.mark.parametrize("preset", ["phi1", "phi1-small"])
@pytest.mark.parametrize("gpu, gib", [("A100-40GB", 40), ("A100", 80)])
def test_model_info_reports_the_training_memory_plan(preset, gpu, gib, capsys):
    """`phi1 model-info --preset P --set gpu=NAME --json` -> "train_memory" with the plan for that card."""
    import json

    from phi1lib.cli import main
    from phi1lib.training import memory

    assert main(["model-info", "--preset", preset, "--set", f"gpu={gpu}", "--json"]) == 0
    tm = json.loads(capsys.readouterr().out)["train_memory"]
    assert {"micro_batch", "gradient_checkpointing", "sharding", "peak_gib_per_gpu", "gpu_memory_gib"} <= set(tm)
    p = get_preset(preset)
    want = memory.plan_for_gpu(p.model, p.pretrain.seq_len, p.pretrain.batch_seqs // p.hardware.n_gpus, gib,
                               p.hardware.n_gpus)
    assert tm == json.loads(json.dumps(want.to_dict())) and tm["fits"] and tm["gpu_memory_gib"] == gib
