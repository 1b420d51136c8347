"""The training memory plan against what torch measures on CPU: the Phi block's saved activations, and the
peak of whole training steps (bf16 autocast, AdamW, gradient accumulation, with and without checkpointing)
tracked by torch's MemTracker; and the plans for the GPU presets on 40 and 80 GB cards."""

from __future__ import annotations

import pytest

from phi1lib.presets import ModelSpec, get_preset
from phi1lib.training import memory as M
from phi1lib.training.model import build_model, enable_checkpointing


def spec(d=256, layers=4, m=1024, heads=8, vocab=4096, ctx=256, dropout=0.0):
    return ModelSpec(n_layer=layers, d_model=d, d_mlp=m, n_head=heads, rotary_dim=(d // heads) // 2, n_ctx=ctx,
                     vocab_size=vocab, dropout=dropout)


@pytest.mark.parametrize("shape", [dict(d=192, m=768, heads=4), dict(d=384, m=1536, heads=6),
                                   dict(d=320, m=640, heads=5)])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_block_activations_match_the_formula(shape, dropout):
    """Shapes the coefficients were not fitted on (they came from d 256/512, d_mlp 1024/2048)."""
    s = spec(layers=1, **shape, dropout=dropout)
    model = build_model(s, attn_implementation="sdpa", dropout=dropout).train()
    model.config.attention_dropout = 0.0  # residual dropout only (see saved_activation_bytes)
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.0
    measured = M.saved_activation_bytes(model, seq_len=256, batch=2)
    planned = M.activation_bytes_per_token(s, dropout=dropout)
    assert planned == pytest.approx(measured, rel=0.05), (measured, planned)


def measured_step_peak(s: ModelSpec, micro: int, seq_len: int, accum: int, checkpointing: bool) -> int:
    """Peak tensor bytes of a steady-state optimizer step (AdamW states exist), measured by MemTracker."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    from phi1lib.training.model import phi_config

    torch.manual_seed(0)
    cfg = phi_config(s)
    cfg.attention_dropout = 0.0  # on CPU a dropout in attention takes SDPA's math path (T x T probabilities)
    cfg._attn_implementation = "sdpa"
    from transformers import PhiForCausalLM

    model = PhiForCausalLM(cfg).train()
    if checkpointing:
        enable_checkpointing(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [torch.randint(0, s.vocab_size, (micro, seq_len)) for _ in range(accum)]

    def step(between=lambda: None):
        for x in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=x, labels=x).loss / accum
            loss.backward()
            between()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # creates the optimizer states
    tracker = MemTracker()
    tracker.track_external(model, opt, *batches)
    with tracker:
        step(tracker.reset_mod_stats)  # per-module stats cover one call; the global peak spans the step
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


SLOW = pytest.mark.slow  # ~40 s each on 2 cores: MemTracker wraps every op of two micro-batches


@pytest.mark.parametrize("case", [
    pytest.param(dict(s=spec(), micro=4, seq=256, ckpt=False), marks=SLOW),
    pytest.param(dict(s=spec(), micro=4, seq=256, ckpt=True), marks=SLOW),
    pytest.param(dict(s=spec(d=384, layers=3, m=1536, heads=6, vocab=2048, ctx=512), micro=2, seq=512, ckpt=False),
                 marks=SLOW),
    pytest.param(dict(s=spec(d=384, layers=3, m=1536, heads=6, vocab=2048, ctx=512, dropout=0.1), micro=2, seq=512,
                      ckpt=True), marks=SLOW),
    dict(s=spec(d=128, layers=2, m=512, heads=4, vocab=2048, ctx=128, dropout=0.1), micro=4, seq=128, ckpt=False),
    dict(s=spec(d=128, layers=2, m=512, heads=4, vocab=2048, ctx=128), micro=4, seq=128, ckpt=True),
])
def test_step_peak_within_15_percent_of_torch(case):
    s = case["s"]
    measured = measured_step_peak(s, case["micro"], case["seq"], accum=2, checkpointing=case["ckpt"])
    planned = M.step_peak(s, case["micro"], case["seq"], gradient_checkpointing=case["ckpt"])["total"]
    assert planned == pytest.approx(measured, rel=0.15), (planned / 2**20, measured / 2**20)


@pytest.mark.parametrize("preset", ["phi1", "phi1-small"])
@pytest.mark.parametrize("gib", [40, 80])
def test_gpu_presets_fit_both_a100_sizes(preset, gib):
    p = get_preset(preset)
    per_gpu = p.pretrain.batch_seqs // p.hardware.n_gpus
    plan = M.plan_for_gpu(p.model, p.pretrain.seq_len, per_gpu, gib, p.hardware.n_gpus)
    assert plan.fits and plan.peak_gib_per_gpu <= gib * M.HEADROOM
    assert plan.micro_batch * plan.grad_accum == per_gpu  # the global batch is kept by accumulation
    bigger = [m for m in range(plan.micro_batch + 1, per_gpu + 1) if per_gpu % m == 0]
    if bigger and not plan.gradient_checkpointing and plan.sharding == "none":  # the largest that fits
        assert not M.plan_for_gpu(p.model, p.pretrain.seq_len, per_gpu, gib, p.hardware.n_gpus,
                                  micro_batch=bigger[0], gradient_checkpointing=False, sharding="none").fits


def test_phi1_at_the_old_default_does_not_fit_and_smaller_cards_get_smaller_settings():
    """The review's finding: 16 sequences per GPU without checkpointing is far beyond an A100."""
    p = get_preset("phi1")
    per_gpu = p.pretrain.batch_seqs // p.hardware.n_gpus
    old = M.plan_for_gpu(p.model, 2048, per_gpu, 80, 8, micro_batch=16, gradient_checkpointing=False,
                         sharding="none")
    assert not old.fits and old.peak_gib_per_gpu > 120
    small, large = M.plan_for_gpu(p.model, 2048, per_gpu, 40, 8), M.plan_for_gpu(p.model, 2048, per_gpu, 80, 8)
    assert small.micro_batch < large.micro_batch and small.grad_accum > large.grad_accum
    two = M.plan_for_gpu(p.model, 2048, per_gpu, 40, 8, micro_batch=2)  # by hand, beyond micro 1: checkpointing
    assert two.fits and two.gradient_checkpointing
    tight = M.plan_for_gpu(p.model, 2048, per_gpu, 24, 8)  # a 24 GB card: only with the states sharded
    assert tight.fits and tight.sharding == "fsdp"
    with pytest.raises(Exception, match="must divide"):
        M.plan_for_gpu(p.model, 2048, per_gpu, 40, 8, micro_batch=3)


def test_run_settings_pick_refuse_and_leave_cpu_alone():
    from phi1lib.errors import ConfigError
    from phi1lib.training import TrainConfig

    p = get_preset("phi1")
    assert TrainConfig.for_preset("phi1").micro_batch is None  # GPU presets: the plan's, per card
    assert TrainConfig.for_preset("tiny").micro_batch == 8
    assert M.run_settings(p.model, 2048, 1024, 8, micro_batch=None, gradient_checkpointing=None) == (8, False, None)
    micro, ckpt, plan = M.run_settings(p.model, 2048, 1024, 8, micro_batch=None, gradient_checkpointing=None,
                                       gpu_memory_gib=80)
    assert (micro, ckpt) == (plan.micro_batch, plan.gradient_checkpointing) and plan.fits and 128 % micro == 0
    with pytest.raises(ConfigError, match=r"pretrain: micro_batch 16, gradient checkpointing off, none sharding needs "
                                          r"about 1\d\d\.\d GiB per GPU.*leave micro_batch and gradient_checkpointing "
                                          r"unset"):
        M.run_settings(p.model, 2048, 1024, 8, micro_batch=16, gradient_checkpointing=False, gpu_memory_gib=80,
                       what="pretrain")
    # micro_batch 16 by hand, checkpointing left to the plan: it turns checkpointing on and fits
    assert M.run_settings(p.model, 2048, 1024, 8, micro_batch=16, gradient_checkpointing=None,
                          gpu_memory_gib=80)[:2] == (16, True)
    with pytest.raises(ConfigError, match="shard the states with FSDP"):  # 24 GB cards: only sharded
        M.run_settings(p.model, 2048, 1024, 8, micro_batch=None, gradient_checkpointing=None, gpu_memory_gib=24)
    micro, ckpt, plan = M.run_settings(p.model, 2048, 1024, 8, micro_batch=None, gradient_checkpointing=None,
                                       gpu_memory_gib=24, sharded=True)
    assert plan.sharding == "fsdp" and plan.fits


def test_gpu_check_script_runs_on_cpu(tmp_path):
    """benchmarks/gpu_check.py is prepared on CPU before any device time is spent: its toy mode runs the same
    code path (plan, bf16 autocast steps, generation) and writes its JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--json",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["train"]["tokens_per_s"] > 0 and got["train"]["plan"]["fits"]
    assert got["generate"]["generated_tokens_per_s"] > 0
    no_gpu = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py")], capture_output=True,
                            text=True, timeout=300)
    assert no_gpu.returncode == 2 and "no CUDA device" in no_gpu.stderr


def test_accelerate_config_is_a_valid_launch_file_for_the_plan(tmp_path, capsys):
    """The launch file model-info writes is what accelerate itself reads: DDP where the plan fits whole copies,
    FSDP2 with one Phi decoder layer per unit where it shards; bad arguments are refused with one line."""
    import json

    from accelerate.commands.config.config_args import ClusterConfig

    from phi1lib.cli import main
    from phi1lib.errors import ConfigError

    out = tmp_path / "launch.yaml"
    assert main(["model-info", "--preset", "phi1", "--set", "gpu=A100-40GB", "--accelerate-config", str(out),
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pretrain"]["train_memory"]["sharding"] == "none" and info["accelerate_config"]["sharding"] == "none"
    cfg = ClusterConfig.from_yaml_file(str(out))
    assert (str(cfg.distributed_type), cfg.num_processes, cfg.mixed_precision) == ("DistributedType.MULTI_GPU", 8, "bf16")
    fsdp = tmp_path / "fsdp.yaml"
    import yaml

    fsdp.write_text(yaml.safe_dump(M.accelerate_config("fsdp", 16, 2, main_process_ip="10.0.0.1")))
    cfg = ClusterConfig.from_yaml_file(str(fsdp))
    assert str(cfg.distributed_type) == "DistributedType.FSDP" and (cfg.num_processes, cfg.num_machines) == (16, 2)
    assert cfg.fsdp_config["fsdp_version"] == 2 and cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == \
        "PhiDecoderLayer" and cfg.main_process_ip == "10.0.0.1"
    from transformers.models.phi import modeling_phi

    assert hasattr(modeling_phi, "PhiDecoderLayer")  # the class the FSDP units wrap exists in transformers
    with pytest.raises(ConfigError, match="main_process_ip"):
        M.accelerate_config("none", 16, 2)
    with pytest.raises(ConfigError, match="multiple of n_machines"):
        M.accelerate_config("none", 7, 2, main_process_ip="x")
    assert main(["model-info", "--preset", "tiny", "--accelerate-config", str(tmp_path / "t.yaml")]) == 2
    assert "no GPU memory plan" in capsys.readouterr().err
    assert main(["model-info", "--preset", "phi1", "--set", "gpu=A100", "--accelerate-config",
                 str(tmp_path / "missing" / "x.yaml")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err
