"""Seeded prompt builders for synthetic textbooks (topic x audience x style) and exercises (topic x name).

The paper gets diversity from constraints: textbook sections are asked for a given topic and
target audience, exercises for a given topic under a function-name constraint. The lists live
in editable data files (phi1lib/data/synth_*.txt). Same lists + same seed -> identical prompts.

At paper scale (~667K sections, ~878K exercises) those products (a few thousand combinations)
repeat hundreds of times, so each pass over a combination also names a setting for the examples
and a level (synth_settings.txt x synth_levels.txt), different for every repeat of that
combination: `distinct_prompts` says how many distinct prompt texts a plan gets.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError
from ..paths import data_file

SYSTEM = "You are an expert Python teacher who writes correct, runnable code."

TEXTBOOK_TEMPLATE = """Write one section of a Python programming textbook.
Topic: {topic}
Target reader: {audience}
Style: {style}

Interleave short paragraphs of plain prose with small, self-contained Python code snippets
(standard library only, each in a ```python block). Explain the idea first, then build it up in
code. Finish with an example usage of the code and its expected output, written as a doctest
(lines starting with >>> followed by the exact output). Do not mention these instructions.{extra}"""

EXERCISE_TEMPLATE = """Write one Python coding exercise about: {topic}.
The function's name must start with `{name_prefix}`.

Reply with exactly one ```python block holding a single function: a signature with type hints,
a docstring that states the task precisely and shows one or two doctest examples (>>> lines
with their exact output), and then the body that solves it. Standard library only; no
printing, no input(), no code outside the function.{extra}"""
EXTRA = "\nDraw the examples from {setting}, and make it {level}."


@dataclass(frozen=True)
class SynthPrompt:
    """One generation request before it reaches the LLM layer."""

    id: str  # stable: hash of kind and constraints (and variant)
    kind: str  # "textbook" | "exercise"
    topic: str
    audience: str | None  # textbooks only
    style: str | None  # textbooks only
    name_prefix: str | None  # exercises only
    variant: int  # > 0 when the same constraint combination is drawn again
    messages: tuple = field(repr=False)  # chat messages ({"role", "content"} dicts)
    setting: str | None = None  # where the examples come from (differs for each variant of a combination)
    level: str | None = None  # how hard the example is

    @property
    def user_text(self) -> str:
        return self.messages[-1]["content"]

    def meta(self) -> dict:
        """The generation metadata every synthetic record carries."""
        out = {"kind": self.kind, "prompt_id": self.id, "topic": self.topic, "variant": self.variant}
        if self.kind == "textbook":
            out.update(audience=self.audience, style=self.style)
        else:
            out.update(name_prefix=self.name_prefix)
        if self.setting is not None:
            out.update(setting=self.setting, level=self.level)
        return out


def load_list(name_or_path: str | Path) -> list[str]:
    """Lines of a list file (packaged name like 'synth_topics.txt' or a path); '#' lines skipped."""
    path = Path(name_or_path)
    if not path.exists():
        path = data_file(str(name_or_path))
    if not path.exists():
        raise DataError(f"{name_or_path}: list file not found; pass a path to a text file with one entry per line "
                        "or a packaged name such as 'synth_topics.txt'")
    items = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    items = [ln for ln in items if ln and not ln.startswith("#")]
    if not items:
        raise DataError(f"{path}: list is empty (only blank or '#' lines); add at least one entry")
    if len(set(items)) != len(items):
        dup = sorted({x for x in items if items.count(x) > 1})
        raise DataError(f"{path}: duplicate entries {dup[:5]}; each entry must appear once")
    return items


def _prompt_id(*parts) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _balanced_draw(axes: Sequence[Sequence[str]], n: int, seed: int) -> list[tuple[tuple[str, ...], int]]:
    """n combinations from the product of `axes`, each drawn at most once per pass.

    The full product is shuffled with `seed`; when n exceeds it, further passes (variant 1,
    2, ...) reshuffle. Returns (combination, variant) pairs in draw order.
    """
    if n < 0:
        raise ConfigError(f"number of prompts n={n} must be >= 0")
    product = list(itertools.product(*axes))
    rng = random.Random(seed)
    out: list[tuple[tuple[str, ...], int]] = []
    variant = 0
    while len(out) < n:
        order = product[:]
        rng.shuffle(order)
        out.extend((combo, variant) for combo in order[: n - len(out)])
        variant += 1
    return out


def _extra_axis(settings: Sequence[str] | None, levels: Sequence[str] | None) -> list[tuple[str, str]]:
    """setting x level pairs (the packaged lists when None; an empty list turns the axis off)."""
    settings = list(settings) if settings is not None else load_list("synth_settings.txt")
    levels = list(levels) if levels is not None else load_list("synth_levels.txt")
    return list(itertools.product(settings, levels))


def _extra_for(extras: list[tuple[str, str]], combo: tuple[str, ...], variant: int, seed: int) -> tuple[str, str] | None:
    """The setting and level of this repeat of `combo`: a seeded start per combination, then one step per variant,
    so the first len(extras) repeats of a combination all differ."""
    if not extras:
        return None
    start = int(hashlib.sha1("\x1f".join((str(seed), *combo)).encode()).hexdigest()[:8], 16)
    return extras[(start + variant) % len(extras)]


def distinct_prompts(n: int, *axes: Sequence[str], settings: Sequence[str] | None = None,
                     levels: Sequence[str] | None = None) -> int:
    """How many distinct prompt texts n prompts over `axes` (plus the setting x level axis) have."""
    space = math.prod(len(a) for a in axes) * max(len(_extra_axis(settings, levels)), 1)
    return min(n, space)


def _text(template: str, extra: tuple[str, str] | None, **fields: str) -> str:
    tail = EXTRA.format(setting=extra[0], level=extra[1]) if extra else ""
    return template.format(extra=tail, **fields)


def textbook_prompts(n: int, seed: int = 0, *, topics: Sequence[str] | None = None,
                     audiences: Sequence[str] | None = None, styles: Sequence[str] | None = None,
                     settings: Sequence[str] | None = None, levels: Sequence[str] | None = None) -> list[SynthPrompt]:
    """n textbook-section prompts drawn from topics x audiences x styles (styles optional: pass []), each repeat
    of a combination with another setting x level (pass settings=[] for none)."""
    topics = list(topics) if topics is not None else load_list("synth_topics.txt")
    audiences = list(audiences) if audiences is not None else load_list("synth_audiences.txt")
    styles = list(styles) if styles is not None else load_list("synth_styles.txt")
    style_axis = styles or ["clear and concise"]
    extras = _extra_axis(settings, levels)
    prompts = []
    for (topic, audience, style), variant in _balanced_draw([topics, audiences, style_axis], n, seed):
        extra = _extra_for(extras, (topic, audience, style), variant, seed)
        text = _text(TEXTBOOK_TEMPLATE, extra, topic=topic, audience=audience, style=style)
        prompts.append(SynthPrompt(
            id=_prompt_id("textbook", topic, audience, style, variant), kind="textbook", topic=topic,
            audience=audience, style=style if styles else None, name_prefix=None, variant=variant,
            messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": text}),
            setting=extra[0] if extra else None, level=extra[1] if extra else None,
        ))
    return prompts


def exercise_prompts(n: int, seed: int = 0, *, topics: Sequence[str] | None = None,
                     name_prefixes: Sequence[str] | None = None, settings: Sequence[str] | None = None,
                     levels: Sequence[str] | None = None) -> list[SynthPrompt]:
    """n exercise prompts drawn from topics x function-name prefixes, each repeat of a combination with another
    setting x level (pass settings=[] for none)."""
    topics = list(topics) if topics is not None else load_list("synth_topics.txt")
    names = list(name_prefixes) if name_prefixes is not None else load_list("synth_function_names.txt")
    extras = _extra_axis(settings, levels)
    prompts = []
    for (topic, prefix), variant in _balanced_draw([topics, names], n, seed):
        extra = _extra_for(extras, (topic, prefix), variant, seed)
        text = _text(EXERCISE_TEMPLATE, extra, topic=topic, name_prefix=prefix)
        prompts.append(SynthPrompt(
            id=_prompt_id("exercise", topic, prefix, variant), kind="exercise", topic=topic, audience=None,
            style=None, name_prefix=prefix, variant=variant,
            messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": text}),
            setting=extra[0] if extra else None, level=extra[1] if extra else None,
        ))
    return prompts


def build_prompts(kind: str, n: int, seed: int = 0, **lists) -> list[SynthPrompt]:
    if kind == "textbook":
        return textbook_prompts(n, seed, **lists)
    if kind == "exercise":
        return exercise_prompts(n, seed, **lists)
    raise ConfigError(f"unknown synthesis kind {kind!r}; choose 'textbook' or 'exercise'")
