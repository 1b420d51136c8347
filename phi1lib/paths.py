"""Where things live (the price books, the packaged data files, the on-disk cache) and how a file is written safely."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError

PACKAGE_DIR = Path(__file__).resolve().parent
# Present in a source checkout (editable install, notebooks, CI); absent in a wheel install.
REPO_ROOT = PACKAGE_DIR.parent


def costs_dir() -> Path:
    """The directory holding `prices/` and `scenarios/`.

    Order: $PHI1_COSTS_DIR, the checkout's top-level `costs/`, the copy shipped in the wheel.
    """
    env = os.environ.get("PHI1_COSTS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    checkout = REPO_ROOT / "costs"
    if (checkout / "prices").is_dir() and (REPO_ROOT / "pyproject.toml").is_file():
        return checkout
    return Path(str(resources.files("phi1lib._costs")))


def data_file(name: str) -> Path:
    """A data file shipped inside the package (topic lists, rubrics, ...)."""
    return Path(str(resources.files("phi1lib.data").joinpath(name)))


def cache_dir(sub: str = "") -> Path:
    """Persistent cache ($PHI1_CACHE, default ~/.cache/phi1), created on demand."""
    root = Path(os.environ.get("PHI1_CACHE", Path.home() / ".cache" / "phi1")).expanduser()
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path` (".name.tmp.ext"); on success it replaces `path` in one rename.

    A reader never sees a half-written file and a crash leaves the old file (or none) in place;
    on error the temporary file is removed and the error propagates. The extension stays last,
    for writers that insist on one (numpy's savez).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path if it is an existing file; else a DataError naming it, `what` was expected and the fix."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected {what}")
    if not path.exists():
        hint = " (its folder does not exist either)" if not path.parent.exists() else ""
        raise DataError(f"{path}: no such file{hint}; check the path (expected {what})")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected {what}")
    return path


def model_config(folder: str | os.PathLike, what: str = "a model folder") -> dict[str, Any]:
    """The config.json of a saved transformers model folder (`save_pretrained`), checked before the model
    is loaded: a missing folder, a file, a folder without config.json, or a config.json that is not a
    JSON object with a `model_type` is a DataError naming the path."""
    folder = Path(folder)
    hint = "give a folder written by save_pretrained (config.json, weights, tokenizer)"
    if not folder.exists():
        raise DataError(f"{folder}: no such folder; {hint} ({what})")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a folder; {hint} ({what})")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise DataError(f"{folder}: not a model folder (no config.json); {hint} ({what})")
    try:
        data = json.loads(cfg.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{cfg}: not a UTF-8 JSON file ({exc}); the model folder is damaged: {hint}") from None
    except OSError as exc:
        raise DataError(f"{cfg}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise DataError(f"{cfg}: not a transformers model config (a JSON object with model_type); {hint}")
    return data
