"""Retry policies: how often a step is attempted and how long to wait between attempts."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

BACKOFF_CHOICES = ("exponential", "linear", "constant")
RETRY_OPTIONS = ("max_attempts", "backoff", "base", "max_backoff", "jitter")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a step is attempted and how long to wait between attempts."""

    max_attempts: int = 1
    backoff: str = "exponential"
    base: float = 1.0
    max_backoff: float = 30.0
    jitter: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> RetryPolicy:
        """Build a policy from the ``retry=`` dict; raises ``ValueError`` naming the bad option."""
        if options is None:
            return cls()
        if not isinstance(options, Mapping):
            raise ValueError(f"retry must be a dict, got {type(options).__name__}")
        unknown = sorted(set(options) - set(RETRY_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown retry option(s) {', '.join(map(repr, unknown))}; known: {', '.join(RETRY_OPTIONS)}"
            )
        max_attempts = options.get("max_attempts", 1)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"retry max_attempts must be an integer >= 1, got {max_attempts!r}")
        backoff = options.get("backoff", "exponential")
        if backoff not in BACKOFF_CHOICES:
            raise ValueError(f"retry backoff must be one of {', '.join(BACKOFF_CHOICES)}, got {backoff!r}")
        numbers = {}
        for key, default in (("base", 1.0), ("max_backoff", 30.0)):
            value = options.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"retry {key} must be a number of seconds >= 0, got {value!r}")
            numbers[key] = float(value)
        jitter = options.get("jitter", True)
        if not isinstance(jitter, bool):
            raise ValueError(f"retry jitter must be True or False, got {jitter!r}")
        return cls(max_attempts, backoff, numbers["base"], numbers["max_backoff"], jitter)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        if self.backoff == "exponential":
            seconds = self.base * 2 ** (attempt - 1)
        elif self.backoff == "linear":
            seconds = self.base * attempt
        else:
            seconds = self.base
        if self.jitter:
            seconds *= 0.75 + 0.5 * rand()
        return min(seconds, self.max_backoff)

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "base": self.base,
            "max_backoff": self.max_backoff,
            "jitter": self.jitter,
        }
