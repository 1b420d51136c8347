"""Pretraining and finetuning as a stage: inputs from the run folder, the stored-result rule, then the loop.

    config = TrainConfig.for_preset("tiny", "pretrain")
    result = training.run(config, RunDir("runs/tiny"))     # writes runs/tiny/pretrain/

Stage folder <run>/<stage>: `final/` (save_pretrained model + tokenizer), `checkpoints/step_NNNNNN/`,
`tokenizer/`, `data/` (packed blocks, memory-mapped), `log.jsonl`, `result.json` (written last).
A finished run is returned as stored while its fingerprint matches; when it does not, the run
stops (StaleResult) unless `resume` may continue its newest checkpoint to more steps.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from .. import budget, runs
from ..errors import ConfigError, DataError
from ..jsonl import parquet_columns
from ..paths import check_file, model_config
from ..runs import RunDir
from ..stage import StaleResult, Timer, Usage, common_fields, load_stored
from . import loop  # setup -> resume -> loop -> finish
from .config import TrainConfig, TrainResult, estimate
from .loop import Callback, TrainState
from .packing import TEXT_COLUMN, parse_source
from .state import LOG_FILE, check_same_run, checkpoints, read_state


# ---- inputs and the stored result ----------------------------------------------------------------

def data_files(config: TrainConfig, run_dir: RunDir) -> tuple[str, ...]:
    """config.data, else the run's: CodeTextbook for pretraining (filtering's kept.parquet and
    synthesis' textbooks.jsonl, those that exist), CodeExercises for finetuning."""
    if config.data:
        return config.data
    if config.stage == "finetune":
        # The paper's phi-1 finetunes on the unpruned set; pass decontam/exercises_pruned_tau*.jsonl
        # as data to retrain on a pruned one.
        return (str(run_dir.input("synthesis", "exercises.jsonl")),)
    cands = [run_dir.path("filtering", "kept.parquet"), run_dir.path("synthesis", "textbooks.jsonl")]
    found = tuple(str(c) for c in cands if c.exists())
    if not found:
        raise DataError(f"pretrain: no data given and neither {cands[0]} nor {cands[1]} exists; the filtering "
                        f"stage has not run in {run_dir.root} (run it first: phi1 run --out {run_dir.root} "
                        "--stages filtering,synthesis) or pass --data FILE[:WEIGHT]")
    return found


def check_source(path: Path) -> None:
    """What can be checked about a training file before any work, cheaply: a Parquet file's footer
    has a `text` column (the records themselves are read, with their own errors, when packing)."""
    if path.suffix.lower() == ".parquet":
        names = parquet_columns(path, what="training texts")
        if TEXT_COLUMN not in names:
            raise DataError(f"{path}: no '{TEXT_COLUMN}' column (columns: {names}); training needs one")


def init_folder(config: TrainConfig, run_dir: RunDir) -> Path | None:
    """Finetuning's starting model: config.init_from, else <run>/pretrain/final."""
    if config.stage != "finetune":
        return None
    src = Path(config.init_from) if config.init_from else run_dir.input("pretrain", "final")
    if not (src / "config.json").exists() and (src.is_dir() or not src.exists()):
        raise DataError(f"finetune: no saved model in {src} (config.json missing); run pretraining first "
                        "or pass init_from / --init-from a folder written by save_pretrained")
    model_config(src, "finetune --init-from: the pretrained model")  # readable before any work starts
    return src


def input_identities(config: TrainConfig, sources: Sequence[str], init_from: Path | None) -> dict[str, str]:
    """{input name: runs.identity} of the data files, the starting model and a local tokenizer folder."""
    inputs: dict[str, str] = {}
    for i, spec in enumerate(sources):
        path = parse_source(spec).path
        if not path.exists():
            raise DataError(f"{path}: training data file not found; pass JSONL or Parquet files with a 'text' "
                            "column (e.g. filtering/kept.parquet, synthesis/textbooks.jsonl)")
        check_source(check_file(path, "a training data file: JSONL or Parquet with a 'text' column"))
        name = f"data:{path.name}"
        inputs[name if name not in inputs else f"data:{i}:{path.name}"] = runs.identity(path)
    if init_from is not None:
        inputs["init_from"] = runs.identity(init_from)
    if config.tokenizer and Path(config.tokenizer).expanduser().is_dir():
        inputs["tokenizer"] = runs.identity(config.tokenizer)
    return inputs


def stored_or_checkpoint(config: TrainConfig, out: Path, run_dir: RunDir, inputs: dict[str, str], *,
                         force: bool, resume: bool) -> tuple[TrainResult | None, Path | None]:
    """(the stored result to return, or None; the checkpoint to continue from, or None = start afresh).

    A stale result (other settings or inputs) stops the run, unless `resume` and the newest
    checkpoint belongs to this run (same data, order and shapes) and is short of config.steps:
    then training continues from it (e.g. more steps) and the stale result.json is replaced.
    """
    if force:
        return None, None
    try:
        stored = load_stored(TrainResult, out, config, root=run_dir.root, inputs=inputs)
        if stored is not None:
            return stored, None
        stale = None
    except StaleResult as exc:
        stale = exc
    kept = checkpoints(out)
    newest = read_state(kept[-1]) if kept else {}
    if stale is not None and not (resume and kept and newest.get("step", 0) < config.steps):
        if kept and newest.get("step", 0) < config.steps:
            hint = f"; or pass --resume to continue from its newest checkpoint ({kept[-1].name})"
        elif kept:
            hint = (f" (--resume cannot continue it: its newest checkpoint, {kept[-1].name}, "
                    f"already reaches steps={config.steps})")
        else:
            hint = ""
        raise StaleResult(f"{stale}{hint}") from None
    if kept and not resume:
        raise ConfigError(f"{out} holds checkpoints of an earlier run (newest {kept[-1].name}); "
                          "pass --resume to continue it or --force to start over")
    if kept:
        check_same_run(newest, config.to_dict(), inputs, kept[-1])
        return None, kept[-1]
    return None, None


def prepare_folder(acc, out: Path, *, force: bool, resuming: bool) -> None:
    """Main process: --force clears the stage folder; a fresh start drops what a failed attempt left
    (log, final model); a resumed run drops only a stale result.json. Packed data and the tokenizer are kept
    (`phi1 pack` may have made them; both are keyed by what they were built from and rebuilt when it changed)."""
    if acc.is_main_process:
        names = (runs.RESULT_FILE,) if resuming else (runs.RESULT_FILE, LOG_FILE, "final")
        if force:
            names += ("checkpoints", "data", "tokenizer")
        for name in names:
            path = out / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    acc.wait_for_everyone()


# ---- the process -----------------------------------------------------------------------------------

def auto_threads() -> int:
    """All cores when the machine is idle, one when other processes already keep it busy."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        return cores
    return cores if busy < 0.5 * cores else 1


@contextmanager
def cpu_threads(config: TrainConfig, device_type: str) -> Iterator[None]:
    """torch's CPU threads for the run (config.threads; 0 = auto_threads), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if device_type == "cpu" and config.threads is not None:
        torch.set_num_threads(config.threads or auto_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_type_of(config: TrainConfig) -> str:
    import torch

    return "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"


def mixed_precision(config: TrainConfig, device_type: str) -> str:
    """accelerate's mixed_precision for config.precision on this device."""
    import torch

    if device_type == "cpu":
        if config.precision in ("bf16", "fp16"):
            raise ConfigError(f"precision={config.precision!r} is for GPUs; use 'fp32' or 'auto' on CPU")
        return "no"
    if config.precision == "fp32":
        return "no"
    if config.precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return config.precision


# ---- packing as its own step ---------------------------------------------------------------------------

@dataclass
class Solo:
    """The part of an accelerate.Accelerator that packing uses, for process `process_index` of `num_processes`
    packing workers started by `pack` (no process group: packing needs no collective)."""

    process_index: int = 0
    num_processes: int = 1

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    is_local_main_process = is_main_process

    def wait_for_everyone(self) -> None:
        pass


def _pack_worker(config: TrainConfig, out: Path, sources: tuple[str, ...], init_from: Path | None, rank: int,
                 world: int) -> None:
    loop.pack_data(config, Solo(rank, world), out, sources, init_from)


def pack(config: TrainConfig, run_dir: RunDir, *, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Tokenizer and packed blocks of a training stage, in <run>/<stage>/tokenizer and /data, before (and without)
    training: `phi1 pack`, run before `accelerate launch` so no rank of the launch waits on packing. `workers`
    processes pack the shards in parallel (each its share, like the ranks of a launch); finished shards of an
    interrupted pack are kept and reused. Returns the data's stats (blocks, tokens, shards per source)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out = run_dir.stage(config.stage)
    sources = data_files(config, run_dir)
    init_from = init_folder(config, run_dir)
    input_identities(config, sources, init_from)  # every file checked before any work
    t = Timer()
    loop.prepare_tokenizer(config, Solo(), out, sources, init_from, loop.data_split(config))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        saved = os.environ.get("RAYON_NUM_THREADS")
        os.environ["RAYON_NUM_THREADS"] = str(threads)  # the tokenizer's Rust threads, per worker
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for f in [pool.submit(_pack_worker, config, out, sources, init_from, r, workers)
                          for r in range(workers)]:
                    f.result()
        finally:
            os.environ.pop("RAYON_NUM_THREADS") if saved is None else os.environ.update(RAYON_NUM_THREADS=saved)
    _, data = loop.pack_data(config, Solo(), out, sources, init_from, progress=progress)
    return {**data.stats, "stage": config.stage, "folder": str(out / "data"), "tokenizer": str(out / "tokenizer"),
            "workers": workers, "seconds": round(t.wall_s, 3)}


# ---- the stage -------------------------------------------------------------------------------------

def run(config: TrainConfig, run_dir: RunDir, *, ledger: budget.Ledger | None = None,
        prices: budget.PriceBook | None = None, force: bool = False, resume: bool = True,
        callbacks: Sequence[Callback] = (), progress: bool = True) -> TrainResult:
    """Train per `config` into <run>/<config.stage>; returns the stored result if that run finished.

    resume: continue from the newest checkpoint when there is one (False: refuse if one exists).
    force: delete an earlier run in the stage folder (result, checkpoints, log, final) and start over.
    callbacks: `loop.Callback`s (e.g. `on_loss(step, loss) -> loss` to inject a fault).
    """
    out = run_dir.path(config.stage)
    sources = data_files(config, run_dir)
    init_from = init_folder(config, run_dir)
    inputs = input_identities(config, sources, init_from)
    stored, checkpoint = stored_or_checkpoint(config, out, run_dir, inputs, force=force, resume=resume)
    if stored is not None:
        return stored
    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    est = estimate(config, prices)
    if ledger is not None:
        ledger.check(est.cost_usd, f"{config.stage} ({config.preset})")
    prices = prices or budget.load_prices()
    t = Timer()  # measured usage covers the whole stage: data, tokenizer, evals and saving, not just the steps
    device_type = device_type_of(config)
    acc = Accelerator(cpu=device_type == "cpu", mixed_precision=mixed_precision(config, device_type),
                      kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=config.collective_timeout_s))])
    run_dir.stage(config.stage)
    prepare_folder(acc, out, force=force, resuming=checkpoint is not None)
    # enable_grad: another stage in the same process may have switched autograd off globally.
    with cpu_threads(config, device_type), torch.enable_grad():
        with t("setup"):
            state = loop.setup(config, acc, out, sources, init_from=init_from, device_type=device_type,
                               prices=prices, timer=t, estimate=est.to_dict(), inputs=inputs, progress=progress)
        if checkpoint is not None:
            with t("resume"):
                loop.resume(state, checkpoint)
        with t("train"):
            loop.loop(state, callbacks)
        with t("save"):
            final = loop.finish(state)
    result = _result(state, final, run_dir, inputs, est, prices, t)
    if acc.is_main_process:
        if ledger is not None:
            u = result.usage
            ledger.record(config.stage, usd=u.usd, gpu_seconds=u.gpu_s, cpu_seconds=u.cpu_s,
                          estimate_usd=est.cost_usd, tokens_in=u.tokens_in, preset=config.preset)
        result.save()
    acc.wait_for_everyone()
    return result


def _result(state: TrainState, final: Path, run_dir: RunDir, inputs: dict[str, str], est: budget.StageEstimate,
            prices: budget.PriceBook, t: Timer) -> TrainResult:
    c, world = state.config, state.acc.num_processes
    wall_s, cpu_s = state.elapsed_s, state.cpu_s
    gpu_s = wall_s * world if state.device_type == "cuda" else 0.0
    usd = 0.0
    if state.device_type == "cuda":
        try:
            usd = gpu_s / 3600 * prices.default_rental(c.gpu or c.hardware.gpu).usd_per_gpu_hour
        except ConfigError:
            usd = 0.0
    rate = loop.mean_rate(state)
    metrics = {"train_loss": state.last_loss, **state.last_eval,
               "humaneval_loss_initial": loop.initial_humaneval_loss(state), "tokens_per_s": rate,
               "mfu": state.mfu(rate)}
    info = {"device": state.device_type, "processes": world, "mixed_precision": state.acc.mixed_precision,
            "attention": state.attention, "params": state.n_params, "grad_accum": state.accum,
            "train_blocks": len(state.train_ids), "mfu_peak": state.peak_what, "resumed_from": state.resumed_from}
    return TrainResult(
        **common_fields(c, state.out, run_dir, inputs, est),
        files={"final": str(final), "log": str(state.out / LOG_FILE), "checkpoints": str(state.out / "checkpoints")},
        metrics=metrics, usage=Usage(tokens_in=c.tokens, gpu_s=gpu_s, cpu_s=cpu_s, wall_s=wall_s, usd=usd),
        seconds=t.finish(), final_dir=str(final), steps=c.steps, tokens=c.tokens, train_loss=state.last_loss,
        heldout_loss=state.last_eval.get("heldout_loss"), humaneval_loss=state.last_eval.get("humaneval_loss"),
        humaneval_loss_initial=metrics["humaneval_loss_initial"], tokens_per_s=rate, mfu=metrics["mfu"], info=info)
