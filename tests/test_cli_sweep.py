"""Sweep the whole CLI with bad input: every subcommand, many kinds of wrong files, flags and --set values.

Each case runs `phi1lib.cli.main(argv)` in this process (stdout/stderr captured, warnings printed as the
real command would print them) and must end with:
  - a non-zero exit code,
  - no Python traceback on stdout or stderr,
  - a message of one to three lines on stderr,
  - every file that existed before (a seeded run folder, the inputs themselves, a samples file's
    earlier results) unchanged and still there.
The subcommands come from the argparse parser itself, so a new command without cases fails
`test_every_subcommand_is_swept`. Cases in OWNED_ELSEWHERE are known failures in code other people
own; they are xfail (not strict) so a fix shows up as XPASS (`pytest -rX`) and its entry can go.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import traceback
import typing
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from phi1lib import cli
from phi1lib.decontam import DecontamConfig
from phi1lib.evaluation import EvalConfig
from phi1lib.filtering import FilterConfig
from phi1lib.synthesis import SynthesisConfig
from phi1lib.training import TrainConfig

# ---- the subcommands, from the parser ------------------------------------------------------------------


def leaf_commands(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command line prefix: sub-subcommands, and each choice of a leading positional."""
    parser = parser or cli.build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        return [leaf for name, sp in subs[0].choices.items() for leaf in leaf_commands(sp, prefix + (name,))]
    choice = next((a for a in parser._actions if not a.option_strings and a.choices), None)
    return [prefix + (c,) for c in choice.choices] if choice else [prefix]


# ---- bad files --------------------------------------------------------------------------------------------

GOOD_EXERCISE = b'{"id": "e1", "text": "def add(a, b):\\n    \\"\\"\\"Add.\\"\\"\\"\\n    return a + b\\n"}\n'
GOOD_TEXT = b'{"id": "t1", "text": "def f(x):\\n    return x * 2\\n"}\n'
GOOD_SAMPLE = b'{"task_id": "HumanEval/0", "completion": "    return False\\n"}\n'

# name -> bytes of a .jsonl file that no command may accept (None: the path does not exist; "dir": a folder)
JSONL = {
    "missing": None,
    "dir": "dir",
    "empty": b"",
    "blank-lines": b"\n\n   \n",
    "truncated": GOOD_TEXT + b'{"id": "t2", "text": "def g(',
    "corrupt-line": GOOD_TEXT + b"{not json at all}\n" + GOOD_TEXT.replace(b"t1", b"t3"),
    "json-list": b"[1, 2, 3]\n",
    "json-number": b"42\n",
    "json-string": b'"just a string"\n',
    "json-null": b"null\n",
    "non-utf8": b'\xff\xfe{"id": "x", "text": "y"}\n',
    "latin1": '{"id": "x", "text": "caf\xe9 = 1", "task_id": "caf\xe9", "completion": "caf\xe9"}\n'.encode("latin-1"),
    "binary": bytes(range(256)) * 4,
    "no-fields": b'{"id": 1}\n',
    "wrong-types": b'{"id": [1], "text": 42, "task_id": 7, "completion": 5, "prompt": 1}\n',
    "not-gzip.gz": b"this is not gzip data\n",
}
TOML_SCENARIO = {
    "missing": None,
    "dir": "dir",
    "empty": b"",
    "non-utf8": b'\xff\xfename = "x"\n',
    "syntax": b"[[line]\nstage = \n",
    "no-lines": b'name = "x"\n',
    "zero-tpm": b'[defaults]\ntokens_per_minute = 0\n[[line]]\nstage = "s"\nitem = "a"\nkind = "llm"\n'
                b'model = "gpt-3.5-turbo"\ntokens_out = 1000\n',
    "zero-gpus": b'[defaults]\nn_gpus = 0\n[[line]]\nstage = "s"\nitem = "a"\nkind = "training"\nmodel = "tiny"\n'
                 b'tokens = 1e6\n',
    "mfu-zero": b'[defaults]\nmfu = 0.0\n[[line]]\nstage = "s"\nitem = "a"\nkind = "training"\nmodel = "tiny"\n'
                b'tokens = 1e6\n',
    "negative": b'[[line]]\nstage = "s"\nitem = "a"\nkind = "fixed"\nusd = -5\n',
    "inf-tokens": b'[[line]]\nstage = "s"\nitem = "a"\nkind = "llm"\nmodel = "gpt-3.5-turbo"\ntokens_out = inf\n',
    "nan-tokens": b'[[line]]\nstage = "s"\nitem = "a"\nkind = "llm"\nmodel = "gpt-3.5-turbo"\ntokens_out = nan\n',
    "unknown-kind": b'[[line]]\nstage = "s"\nitem = "a"\nkind = "magic"\n',
    "wrong-type": b'[[line]]\nstage = "s"\nitem = "a"\nkind = "fixed"\nusd = "lots"\n',
}
_SRC = b'source = "test"\nas_of = 2025-01-01\n'
_RENTAL = b'[rental.b8]\nusd_per_hour = 10\ngpu = "B200"\nn_gpus = 8\n' + _SRC
TOML_PRICES = {  # one file in an otherwise valid --prices folder
    "non-utf8": b"\xff\xfe[coffee]\n",
    "syntax": b"[gpu.B200\npeak_tflops = \n",
    "zero-peak": b"[gpu.B200]\npeak_tflops = 0\n" + _SRC + _RENTAL,
    "negative-peak": b"[gpu.B200]\npeak_tflops = -1\n" + _SRC + _RENTAL,
    "inf-peak": b"[gpu.B200]\npeak_tflops = inf\n" + _SRC + _RENTAL,
    "nan-price": b'[llm."m"]\ninput_per_1k = nan\noutput_per_1k = 1\n' + _SRC,
    "zero-gpus": b"[gpu.B200]\npeak_tflops = 100\n" + _SRC + _RENTAL.replace(b"n_gpus = 8", b"n_gpus = 0"),
    "unknown-table": b"[pizza.margherita]\nusd = 1\n" + _SRC,
    "string-number": b'[coffee.c]\nusd = "five"\n' + _SRC,
}
PARQUET = {"missing": None, "dir": "dir", "empty": b"", "garbage": b"PAR1 but not really parquet",
           "jsonl-inside": GOOD_TEXT}
MODEL_DIR = {"missing": None, "empty-dir": "dir", "a-file": b"not a folder",
             "bad-config": {"config.json": b"{not json"}, "non-utf8-config": {"config.json": b"\xff\xfe{}"},
             "config-list": {"config.json": b"[1, 2]"}}
SQLITE = {"missing": None, "dir": "dir", "garbage": b"this is not a sqlite database" * 20, "non-utf8": b"\xff\xfe" * 50}


def _parquet_without_text(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "code": ["x = 1"]}), path)


def _parquet_int_text(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "text": [42]}), path)


PARQUET.update({"no-text-column": _parquet_without_text, "int-text": _parquet_int_text})


def materialize(root: Path, name: str, content) -> Path:
    """Create `name` under root from a content spec (bytes, None, "dir", a {file: bytes} folder, a writer)."""
    path = root / name
    if content is None:
        return path
    if content == "dir":
        path.mkdir(parents=True)
    elif isinstance(content, dict):
        path.mkdir(parents=True)
        for fname, data in content.items():
            (path / fname).write_bytes(data)
    elif callable(content):
        content(path)
    else:
        path.write_bytes(content)
    return path


# ---- cases --------------------------------------------------------------------------------------------------
# A case: (command, id, argv). In argv, "{OUT}" is the seeded run folder, "{T}" the case's folder;
# "@FAMILY:KIND:NAME" is a bad file made from FAMILY[KIND] as T/NAME; "@good:NAME" a good file.

GOOD = {"exercises.jsonl": GOOD_EXERCISE, "texts.jsonl": GOOD_TEXT * 3, "samples.jsonl": GOOD_SAMPLE,
        "requests.jsonl": b'{"prompt": "Write a haiku about tests."}\n'}
FAMILIES = {"jsonl": JSONL, "scenario": TOML_SCENARIO, "parquet": PARQUET, "model": MODEL_DIR, "sqlite": SQLITE}
BAD_NUMBERS = ("0", "-1", "nan", "inf", "-inf", "abc", "1e999")
STAGE_FOLDERS = ("filtering", "synthesis", "decontam", "pretrain", "finetune", "evaluation", "ablation")


def _file_cases(cmd, base, flag, family, suffix, kinds=None, positional=False):
    table = FAMILIES[family]
    for kind in kinds or table:
        name = kind if kind.endswith(suffix) or "." in kind else f"{kind}{suffix}"
        arg = f"@{family}:{kind}:{name}"
        yield cmd, f"{flag or 'arg'}={name}", [*base, arg] if positional else [*base, flag, arg]


def _number_cases(cmd, base, flag, values=BAD_NUMBERS, tag=""):
    for v in values:
        yield cmd, f"{flag}={v}{tag}", [*base, f"{flag}={v}"]


def _set_values(tp) -> list[str]:
    """Values no field of type `tp` accepts from --set: wrong type, non-finite, fractional for ints."""
    origin, args = typing.get_origin(tp), [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        if len(args) == 1:
            return _set_values(args[0])
        return []
    if origin is tuple:
        return ["abc", "1,abc"] if args and args[0] in (int, float) else []
    if tp is bool:
        return ["maybe", "2", "yes please"]
    if tp is int:
        return ["abc", "1.5", "inf", "nan", "1e999"]
    if tp is float:
        return ["abc", "nan", "inf", "-inf", "1e999"]
    if tp in (str, Path):
        return []
    return ["abc"]  # nested dataclasses (model shape, hardware) cannot be set from the command line


# Fields that must reject a negative number (every numeric field of the stage configs should).
def _set_cases(cmd, base, cls):
    hints = typing.get_type_hints(cls)
    yield cmd, "set-unknown-key", [*base, "--set", "no_such_field=1"]
    yield cmd, "set-no-equals", [*base, "--set", "seed"]
    yield cmd, "set-empty-key", [*base, "--set", "=1"]
    for f in dataclasses.fields(cls):
        for i, v in enumerate(_set_values(hints[f.name])):
            if i:  # the field's first wrong value runs by default, the rest with the slow tests
                SLOW.add(f"{' '.join(cmd)}: set-{f.name}={v}")
            yield cmd, f"set-{f.name}={v}", [*base, "--set", f"{f.name}={v}"]
        inner = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
        if inner[0] in (int, float) and f.name not in NEGATIVE_OK:
            yield cmd, f"set-{f.name}=-1", [*base, "--set", f"{f.name}=-1"]


NEGATIVE_OK: set[str] = set()  # no numeric stage field has a meaning below zero
SLOW: set[str] = set()  # case ids run only with the slow tests (repeats of a reader or a type another case covers)


def _common_stage_cases(cmd, base, cls):
    """--preset, --cap-usd, --prices, --set and --out cases every stage command shares (estimate only)."""
    est = [*base, "--estimate-only"]
    yield cmd, "out=a-file", [*(a if a != "{OUT}" else "@good:texts.jsonl" for a in base)]
    yield cmd, "preset=nope", [*est, "--preset", "nope"]
    yield cmd, "unknown-flag", [*est, "--no-such-flag"]
    yield from _number_cases(cmd, est, "--cap-usd", ("-1", "nan", "inf", "abc"))
    yield from _prices_cases(cmd, est)
    yield from _set_cases(cmd, est, cls)


def _prices_cases(cmd, base):
    """Every bad price book for `phi1 budget`; the other commands share its reader: three by default."""
    if cmd != ("budget",):
        SLOW.update(f"{' '.join(cmd)}: prices={k}" for k in ("a-file", "empty-folder", "dir-named-toml", *TOML_PRICES)
                    if k not in ("non-utf8", "zero-peak"))
    yield cmd, "prices=missing", [*base, "--prices", "{T}/no-such-folder"]
    yield cmd, "prices=a-file", [*base, "--prices", "@good:texts.jsonl"]
    yield cmd, "prices=empty-folder", [*base, "--prices", "@folder:empty-prices"]
    yield cmd, "prices=dir-named-toml", [*base, "--prices", "@folder:prices-with-dir"]
    for kind in TOML_PRICES:
        yield cmd, f"prices={kind}", [*base, "--prices", f"@prices:{kind}:prices-{kind}"]


def build_cases() -> list[tuple[str, str, list[str]]]:
    cases: list = []
    add = cases.extend
    out = ["--out", "{OUT}"]

    # budget
    b = ("budget",)
    add(_file_cases(b, ["budget"], "--scenario", "scenario", ".toml"))
    add(_prices_cases(b, ["budget"]))
    for kind in ("zero-peak", "negative-peak", "inf-peak", "zero-gpus"):  # a GPU of the book, priced
        cases.append((b, f"prices={kind}-used", ["budget", "--preset", "phi1", "--set", "gpu=B200",
                                                  "--prices", f"@prices:{kind}:prices-{kind}"]))
    cases.append((b, "scenarios=missing", ["budget", "--scenarios", "{T}/no-such-folder"]))
    cases.append((b, "scenarios=a-file", ["budget", "--scenarios", "@good:texts.jsonl"]))
    cases.append((b, "scenario=unknown-name", ["budget", "--scenario", "no-such-scenario"]))
    cases.append((b, "preset=nope", ["budget", "--preset", "nope"]))
    cases.append((b, "scenario-and-preset", ["budget", "--preset", "tiny", "--scenario", "phi1-paper"]))
    for key, values in {"n_gpus": ("0", "-1", "1.5", "abc", "inf"), "mfu": ("0", "-0.1", "1.5", "nan", "inf", "abc"),
                        "tokens_per_minute": ("0", "-1", "nan", "inf", "abc"), "batch": ("maybe", "2", "on"),
                        "as_of": ("June", "2023-02-30"), "gpu": ("nope",), "rental": ("nope",), "coffee": ("nope",),
                        "textbooks.tokens_out": ("inf", "nan", "-1", "abc"), "textbooks.samples": ("inf", "-1"),
                        "textbooks.tokens_per_minute": ("0", "-1"), "textbooks.nope": ("1",),
                        "nope.samples": ("1",), "pretrain.seq_len": ("0", "-1", "1.5")}.items():
        for v in values:
            sc = ["--preset", "phi1"] if key.startswith("pretrain.") else ["--scenario", "phi1-paper"]
            cases.append((b, f"set-{key}={v}", ["budget", *sc, "--set", f"{key}={v}"]))
    cases.append((b, "set-no-equals", ["budget", "--set", "gpu"]))
    cases.append((b, "unknown-flag", ["budget", "--no-such-flag"]))

    # model-info
    m = ("model-info",)
    cases.append((m, "preset=nope", ["model-info", "--preset", "nope"]))
    add(_prices_cases(m, ["model-info"]))

    # decontaminate
    d = ("decontaminate",)
    dbase = ["decontaminate", *out, "--embedder", "none"]
    add(_file_cases(d, dbase, "--exercises", "jsonl", ".jsonl"))
    add(_file_cases(d, [*dbase, "--exercises", "@good:exercises.jsonl"], "--textbooks", "jsonl", ".jsonl"))
    add(_file_cases(d, [*dbase, "--exercises", "@good:exercises.jsonl"], "--mbpp", "jsonl", ".jsonl"))
    add(_number_cases(d, dbase + ["--exercises", "@good:exercises.jsonl"], "--taus",
                      ("0", "-1", "1.5", "nan", "inf", "abc", ",", "0.9,abc")))
    cases.append((d, "exercises=duplicate-ids", [*dbase, "--exercises", "@raw:dup.jsonl"]))
    add(_common_stage_cases(d, dbase, DecontamConfig))

    # eval generate / run / score
    for action in ("generate", "run"):
        e = ("eval", action)
        ebase = ["eval", action, *out]
        add(_file_cases(e, ebase, "--model", "model", ""))
        add(_file_cases(e, [*ebase, "--model", "openai:gpt-4o-mini", "--benchmark", "jsonl"], "--problems",
                        "jsonl", ".jsonl"))
        for flag, values in {"--n-samples": ("0", "-1", "abc"), "--temperature": ("-1", "nan", "inf", "3", "abc"),
                             "--top-p": ("0", "-1", "1.5", "nan", "abc"), "--max-new-tokens": ("0", "-1", "abc"),
                             "--batch-size": ("0", "-1"), "--limit": ("0", "-1", "abc"), "--threads": ("-1", "abc"),
                             "--seed": ("abc",)}.items():
            add(_number_cases(e, [*ebase, "--estimate-only"], flag, values))
        cases.append((e, "benchmark=nope", [*ebase, "--benchmark", "nope"]))
        cases.append((e, "jsonl-without-problems", [*ebase, "--benchmark", "jsonl", "--estimate-only"]))
        add(_common_stage_cases(e, ebase, EvalConfig))
    for action in ("generate", "run"):  # a samples file from an earlier run whose records lack task_id
        cases.append((("eval", action), "earlier-samples-without-task_id",
                      ["eval", action, *out, "--model", "openai:gpt-4o-mini", "--api-key-env", "none",
                       "--base-url", "http://127.0.0.1:9/v1", "--limit", "1", "@seed:evaluation/samples.jsonl"]))
    r = ("eval", "run")
    rbase = ["eval", "run", *out, "--estimate-only"]
    for flag, values in {"--k": ("0", "-1", "abc", ","), "--timeout": ("0", "-1", "nan", "inf", "601"),
                         "--memory-mb": ("0", "-1"), "--workers": ("0", "-1")}.items():
        add(_number_cases(r, rbase, flag, values))
    add(_file_cases(r, ["eval", "run", *out, "--model", "openai:gpt-4o-mini"], "--split", "jsonl", ".json",
                    kinds=("missing", "dir", "empty", "non-utf8", "json-list", "binary")))
    s = ("eval", "score")
    add(_file_cases(s, ["eval", "score", "--workers", "1"], "--samples", "jsonl", ".jsonl"))
    add(_file_cases(s, ["eval", "score", "--workers", "1", "--samples", "@good:samples.jsonl", "--benchmark", "jsonl"],
                    "--problems", "jsonl", ".jsonl"))
    for flag, values in {"--k": ("0", "-1", "abc", ","), "--timeout": ("0", "-1", "nan", "inf", "601", "abc"),
                         "--memory-mb": ("0", "-1", "abc"), "--workers": ("0", "-1", "abc")}.items():
        add(_number_cases(s, ["eval", "score", "--samples", "@good:samples.jsonl"], flag, values))
    cases.append((s, "benchmark=jsonl-without-problems", ["eval", "score", "--samples", "@good:samples.jsonl",
                                                          "--benchmark", "jsonl"]))

    # filter
    f = ("filter",)
    fbase = ["filter", *out]
    add(_file_cases(f, fbase, "--corpus", "jsonl", ".jsonl"))
    add(_file_cases(f, fbase, "--corpus", "parquet", ".parquet", kinds=("missing", "empty", "garbage", "no-text-column")))
    for flag, values in {"--limit": ("0", "-1", "abc"), "--annotate": ("0", "-1", "abc"),
                         "--threshold": ("-0.1", "1.5", "nan", "inf", "abc"),
                         "--keep-fraction": ("0", "-1", "1.5", "nan", "abc"), "--max-length": ("0", "-1"),
                         "--num-proc": ("0", "-1"), "--seed": ("-1", "abc"), "--granularity": ("nope",),
                         "--pooling": ("nope",)}.items():
        add(_number_cases(f, [*fbase, "--estimate-only"], flag, values))
    add(_common_stage_cases(f, fbase, FilterConfig))
    fs = ("filter", "score")
    add(_file_cases(fs, ["filter", "score", "--run", "{OUT}"], None, "jsonl", ".jsonl", positional=True))
    cases.append((fs, "run-without-a-filter", ["filter", "score", "--run", "{T}", "@good:texts.jsonl"]))
    cases.append((fs, "run-missing", ["filter", "score", "--run", "{T}/nope", "@good:texts.jsonl"]))
    cases.append((fs, "no-run", ["filter", "score", "@good:texts.jsonl"]))

    # pack
    for stage in ("pretrain", "finetune"):
        pk = ("pack", stage)
        pbase = ["pack", stage, *out]
        if stage == "pretrain":
            add(_file_cases(pk, pbase, "--data", "jsonl", ".jsonl"))
            add(_file_cases(pk, pbase, "--data", "parquet", ".parquet"))
            cases.append((pk, "data=weight-abc", [*pbase, "--data", "@good:texts.jsonl:abc"]))
        else:
            cases.append((pk, "no-pretrained-model", [*pbase, "--data", "@good:texts.jsonl"]))
            add(_file_cases(pk, [*pbase, "--data", "@good:texts.jsonl"], "--init-from", "model", ""))
        add(_number_cases(pk, [*pbase, "--data", "@good:texts.jsonl"], "--workers", ("0", "-1", "abc", "1.5")))
        for field, value in (("pack_shard_docs", "0"), ("pack_wait_s", "0"), ("collective_timeout_s", "-1"),
                             ("seq_len", "1"), ("nope", "1")):
            cases.append((pk, f"set-{field}={value}", [*pbase, "--data", "@good:texts.jsonl", "--set",
                                                        f"{field}={value}"]))

    # llm
    add(_file_cases(("llm", "stats"), ["llm", "stats"], None, "sqlite", ".sqlite", positional=True))
    dr = ("llm", "dry-run")
    add(_file_cases(dr, ["llm", "dry-run", "--model", "gpt-3.5-turbo"], None, "jsonl", ".jsonl", positional=True))
    drbase = ["llm", "dry-run", "@good:requests.jsonl", "--model", "gpt-3.5-turbo"]
    cases.append((dr, "model=unknown", ["llm", "dry-run", "@good:requests.jsonl", "--model", "no-such-model"]))
    add(_number_cases(dr, drbase, "--max-tokens", ("0", "-1", "abc")))
    add(_number_cases(dr, drbase, "--expected-output", ("-1", "nan", "inf", "abc")))
    add(_file_cases(dr, drbase, "--store", "sqlite", ".sqlite", kinds=("dir", "garbage")))
    add(_prices_cases(dr, drbase))
    bs = ("llm", "batch-status")
    add(_file_cases(bs, ["llm", "batch-status", "--model", "gpt-3.5-turbo"], None, "sqlite", ".sqlite",
                    positional=True))

    # run
    rn = ("run",)
    rnbase = ["run", *out, "--dry-run"]
    for flag, values in {"--stages": ("nope", "filtering,nope", ","), "--seeds": ("abc", "-1", "1.5"),
                         "--cap-usd": ("-1", "nan", "abc"), "--preset": ("nope",)}.items():
        add(_number_cases(rn, rnbase, flag, values))
        if flag != "--stages":
            add(_number_cases(rn, ["run", *out, "--stages", "decontam"], flag, values, tag=" (not a dry run)"))
    add(_prices_cases(rn, rnbase))
    cases.append((rn, "out=a-file", ["run", "--out", "@good:texts.jsonl", "--stages", "decontam"]))

    # synth
    for kind in ("textbooks", "exercises", "all"):
        sy = ("synth", kind)
        sbase = ["synth", kind, *out]
        add(_file_cases(sy, sbase, "--source", "parquet", ".parquet"))
        add(_file_cases(sy, sbase, "--source", "jsonl", ".jsonl", kinds=("non-utf8", "truncated")))
        for flag, values in {"--count": ("0", "-1", "abc", "1.5"), "--seed": ("-1", "abc"),
                             "--provider": ("nope",)}.items():
            add(_number_cases(sy, [*sbase, "--estimate-only"], flag, values))
        cases.append((sy, "provider-openai-without-model", [*sbase, "--provider", "openai", "--estimate-only"]))
        cases.append((sy, "model=unknown", [*sbase, "--model", "no-such-llm", "--estimate-only"]))
        if kind == "all":  # the same config and flags for every kind: once is enough
            add(_common_stage_cases(sy, sbase, SynthesisConfig))
        else:
            cases.append((sy, "set-unknown-key", [*sbase, "--estimate-only", "--set", "no_such_field=1"]))

    # train
    for stage in ("pretrain", "finetune"):
        t = ("train", stage)
        tbase = ["train", stage, *out, "--max-steps", "1"]
        if stage == "pretrain":
            add(_file_cases(t, tbase, "--data", "jsonl", ".jsonl"))
            add(_file_cases(t, tbase, "--data", "parquet", ".parquet"))
            for cid, spec in (("weight-abc", "@good:texts.jsonl:abc"), ("weight-negative", "@good:texts.jsonl:-1"),
                              ("weight-nan", "@good:texts.jsonl:nan"), ("no-file", ":2"),
                              ("missing-with-weight", "{T}/nope.jsonl:2"), ("txt", "@good:texts.txt")):
                cases.append((t, f"data={cid}", [*tbase, "--data", spec]))
            cases.append((t, "init-from-on-pretrain", [*tbase, "--init-from", "{T}", "--estimate-only"]))
        else:
            add(_file_cases(t, [*tbase, "--data", "@good:texts.jsonl"], "--init-from", "model", ""))
            cases.append((t, "no-pretrained-model", [*tbase, "--data", "@good:texts.jsonl"]))
        add(_number_cases(t, ["train", stage, *out, "--estimate-only"], "--max-steps", ("0", "-1", "abc", "1.5")))
        cases.append((t, "set-stage", ["train", stage, *out, "--estimate-only", "--set", "stage=finetune"]))
        for field, value in (("precision", "fp8"), ("device", "tpu"), ("seq_len", "100000"), ("micro_batch", "0"),
                             ("heldout_fraction", "2"), ("dropout", "1"), ("adam_betas", "0.9"),
                             ("adam_betas", "0.9,1.5"), ("peak_lr", "0"), ("grad_clip", "0"), ("batch_seqs", "0"),
                             ("decay_steps", "0")):
            cases.append((t, f"set-{field}={value}", ["train", stage, *out, "--estimate-only", "--set",
                                                      f"{field}={value}"]))
        if stage == "pretrain":  # one TrainConfig for both stages: its whole --set matrix once
            add(_common_stage_cases(t, ["train", stage, *out], TrainConfig))
        else:
            cases.append((t, "set-unknown-key", ["train", stage, *out, "--estimate-only", "--set", "nope=1"]))
            cases.append((t, "preset=nope", ["train", stage, *out, "--estimate-only", "--preset", "nope"]))
    return cases


CASES = build_cases()

# Known failing cases, "command: case id" -> what happens now (xfail, not strict: a fix shows as XPASS and the
# entry goes). Empty: every case passes.
OWNED_ELSEWHERE: dict[str, str] = {}


# ---- running one case ---------------------------------------------------------------------------------------


SEEDED = {"evaluation/samples.jsonl": b'{"completion": "    return 1\\n"}\n'}


def _resolve(argv: list[str], tmp: Path, out: Path) -> list[str]:
    resolved = []
    for arg in argv:
        if arg.startswith("@seed:"):  # seeded into the run folder by _seed, not an argument
            continue
        if arg.startswith("@"):
            spec, _, tail = arg[1:].partition(":")
            if spec == "good":
                name, _, weight = tail.partition(":")
                path = tmp / name
                if not path.exists():
                    path.write_bytes(GOOD.get(name, GOOD_TEXT))
                arg = str(path) + (f":{weight}" if weight else "")
            elif spec == "raw":
                path = materialize(tmp, tail, GOOD_EXERCISE * 2)
                arg = str(path)
            elif spec == "folder":
                path = tmp / tail
                path.mkdir()
                if tail == "prices-with-dir":
                    (path / "sub.toml").mkdir()
                arg = str(path)
            elif spec == "prices":
                kind, _, name = tail.partition(":")
                path = tmp / name
                path.mkdir()
                (path / f"{kind}.toml").write_bytes(TOML_PRICES[kind])
                arg = str(path)
            else:
                kind, _, name = tail.partition(":")
                arg = str(materialize(tmp, name, FAMILIES[spec][kind]))
        resolved.append(arg.replace("{OUT}", str(out)).replace("{T}", str(tmp)))
    return resolved


def _seed(tmp: Path, out: Path, argv: list[str], wanted: list[str] = ()) -> None:
    """Files a user already has: a run folder with something in every stage folder, earlier results, and
    the files a case asks for with "@seed:PATH" (SEEDED[PATH], inside the run folder)."""
    out.mkdir()
    for arg in wanted:
        if arg.startswith("@seed:"):
            name = arg.split(":", 1)[1]
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(SEEDED[name])
    (out / "notes.txt").write_text("my notes\n")
    (out / "ledger.jsonl").write_text("")
    for stage in STAGE_FOLDERS:
        (out / stage).mkdir(exist_ok=True)
        (out / stage / "keep.txt").write_text(f"{stage} output made earlier\n")
    if argv[:2] == ["eval", "score"]:
        for i, arg in enumerate(argv[:-1]):
            if arg == "--samples" and Path(argv[i + 1]).parent.exists():
                Path(argv[i + 1] + "_results.jsonl").write_text('{"earlier": "results"}\n')


def _snapshot(root: Path) -> dict[str, str]:
    snap = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            try:
                snap[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except PermissionError:
                snap[str(p.relative_to(root))] = "unreadable"
    return snap


_PARSER = None


def _parser() -> argparse.ArgumentParser:
    """One parser for the whole sweep: building it is most of an in-process call's time (argparse keeps no
    state between parses; `append` defaults are copied)."""
    global _PARSER
    if _PARSER is None:
        _PARSER = _build_parser()
    return _PARSER


_build_parser = cli.build_parser


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """cli.main(argv) in-process: (exit code, stdout, stderr); an escaping exception becomes its traceback."""
    out, err = io.StringIO(), io.StringIO()

    def show(message, category, filename, lineno, file=None, line=None):
        err.write(warnings.formatwarning(message, category, filename, lineno, line))

    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        try:
            rc = cli.main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the real process would print before dying
            traceback.print_exc(file=err)
            rc = 1
    return rc, out.getvalue(), err.getvalue()


def _case_params():
    for cmd, cid, argv in CASES:
        key = f"{' '.join(cmd)}: {cid}"
        marks = [pytest.mark.xfail(reason=OWNED_ELSEWHERE[key], strict=False)] if key in OWNED_ELSEWHERE else []
        marks += [pytest.mark.slow] if key in SLOW else []
        yield pytest.param(argv, id=key, marks=marks)


@pytest.fixture(scope="module")
def case_dirs(tmp_path_factory):
    """A fresh folder per case, cheaply: pytest's tmp_path rescans its numbered folders on every call."""
    root, counter = tmp_path_factory.mktemp("sweep"), iter(range(10**6))
    return lambda: root / f"case{next(counter)}"


@pytest.mark.parametrize("argv", list(_case_params()))
def test_bad_input_gets_one_clear_line(argv, case_dirs, monkeypatch):
    tmp_path = case_dirs()
    tmp, out = tmp_path / "in", tmp_path / "run"
    tmp.mkdir(parents=True)
    monkeypatch.setenv("PHI1_RUN_DIR", str(tmp_path / "default-run"))  # never the checkout's runs/
    monkeypatch.setattr(cli, "build_parser", _parser)
    real = _resolve(argv, tmp, out)
    _seed(tmp, out, real, argv)
    before = _snapshot(tmp_path)
    rc, stdout, stderr = run_cli(real)
    shown = f"$ phi1 {' '.join(real)}\n--- stdout\n{stdout[-2000:]}\n--- stderr\n{stderr[-3000:]}"
    assert "Traceback" not in stderr + stdout, shown
    assert rc not in (0, None), shown
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, shown
    assert any(line.startswith("phi1") and ": error: " in line for line in lines), shown
    after = _snapshot(tmp_path)
    changed = sorted(p for p, h in before.items() if after.get(p) != h)
    assert not changed, f"files changed or removed: {changed}\n{shown}"


def test_every_subcommand_is_swept():
    leaves = set(leaf_commands())
    swept = {cmd for cmd, _, _ in CASES}
    assert leaves - swept == set(), f"subcommands without bad-input cases: {sorted(leaves - swept)}"
    assert len(leaves) >= 15  # budget, decontaminate, eval x3, filter, llm x3, model-info, run, synth x3, train x2
    ids = [f"{' '.join(c)}: {i}" for c, i, _ in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert set(OWNED_ELSEWHERE) <= set(ids), f"stale OWNED_ELSEWHERE entries: {set(OWNED_ELSEWHERE) - set(ids)}"


# ---- broken pipe: a real process whose reader goes away ---------------------------------------------------------

PRINTING = [["budget", "--json"], ["budget", "--scenario", "phi1-paper"], ["budget", "--list", "--preset", "phi1"],
            ["model-info", "--json"], ["run", "--preset", "phi1", "--dry-run", "--json"],
            ["train", "pretrain", "--preset", "phi1", "--estimate-only", "--json"],
            ["eval", "generate", "--preset", "phi1", "--estimate-only"], ["synth", "all", "--estimate-only"],
            ["filter", "--estimate-only", "--json"], ["decontaminate", "--estimate-only", "--json"], ["--help"]]


@pytest.mark.parametrize("argv", [pytest.param(a, id=" ".join(a), marks=[pytest.mark.slow] if i else [])
                                  for i, a in enumerate(PRINTING)])
def test_broken_pipe_ends_quietly(argv, tmp_path):
    """`phi1 ... | head -1`: the reader leaves before the command prints; exit 0, nothing on stderr."""
    env = {**os.environ, "PHI1_RUN_DIR": str(tmp_path / "run")}
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first byte is written
    proc = subprocess.run([sys.executable, "-m", "phi1lib.cli", *argv], stdout=w, stderr=subprocess.PIPE,
                          env=env, timeout=120)
    os.close(w)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr.decode().strip() == ""


def test_broken_pipe_in_process(monkeypatch, tmp_path):
    """The same path without a subprocess: stdout raises BrokenPipeError on write and on flush."""

    class Gone(io.TextIOBase):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Gone())
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert cli.main(["budget", "--json"]) == 0
    assert err.getvalue() == ""
    sys.stdout.flush()  # what the interpreter does at exit: must not raise again
