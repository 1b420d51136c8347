"""Where things live (the price books, the packaged data files, the on-disk cache) and how a file is written safely."""

from __future__ import annotations

import os
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

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
