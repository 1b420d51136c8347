"""Exception types shared by every stage; messages name the thing that is wrong and the fix."""

from __future__ import annotations


class Phi1Error(Exception):
    """Base class: a user-facing error whose message says what is wrong and what would be accepted."""


class ConfigError(Phi1Error, ValueError):
    """A config field, preset name, CLI option or file has a wrong value."""


class DataError(Phi1Error):
    """An input file is missing, unreadable or malformed (the message names file and line)."""


class BudgetExceeded(Phi1Error):
    """A request would cross the user's budget cap; raised *before* the money is spent."""

    def __init__(self, message: str, *, spent_usd: float = 0.0, cap_usd: float = 0.0, needed_usd: float = 0.0):
        super().__init__(message)
        self.spent_usd = spent_usd
        self.cap_usd = cap_usd
        self.needed_usd = needed_usd

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.cap_usd - self.spent_usd)


class MissingDependency(Phi1Error, ImportError):
    """An optional package is needed for this path; the message gives the pip command."""


def unknown_choice(what: str, value: object, choices) -> ConfigError:
    """Build the standard 'unknown X' error that lists what exists."""
    listed = ", ".join(sorted(str(c) for c in choices)) or "(none)"
    return ConfigError(f"unknown {what} {value!r}; choose one of: {listed}")
