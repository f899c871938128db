"""Per-attempt log capture: what a step logs (and optionally prints) while it runs, kept with its attempt.

One handler on the root logger appends to the buffer of the attempt that is running in the current
context (a :class:`contextvars.ContextVar`), so threads and batched branches each see their own.
Records of the engine's own ``durable_django`` loggers are not captured: they are about the step,
not from it. With ``DURABLE["CAPTURE_LOGS"] = False`` no buffer is opened and the handler returns at once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from .conf import durable_settings

MAX_MESSAGE = 4000
"""Characters kept of one message (its formatted exception included)."""

ENGINE_LOGGER = "durable_django"


class Buffer:
    """The records of one attempt, within the configured caps."""

    def __init__(self, level: int, max_records: int, max_bytes: int) -> None:
        self.level = level
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.records: list[dict[str, Any]] = []
        self.size = 0
        self.cut = 0
        self.cut_by = ""

    def add(self, level: str, logger: str, message: str) -> None:
        message = clean(message)
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "…"
        size = len(message.encode("utf-8", "replace")) + len(logger) + 60
        if len(self.records) >= self.max_records:
            self.cut, self.cut_by = self.cut + 1, self.cut_by or f"cap of {self.max_records} records"
            return
        if self.size + size > self.max_bytes:
            self.cut, self.cut_by = self.cut + 1, self.cut_by or f"cap of {self.max_bytes} bytes"
            return
        self.size += size
        at = datetime.now(UTC).isoformat()
        self.records.append({"at": at, "level": level, "logger": logger, "message": message})

    def result(self) -> list[dict[str, Any]]:
        if not self.cut:
            return self.records
        message = f"{self.cut} more record{'s' if self.cut != 1 else ''} not kept ({self.cut_by})"
        at = datetime.now(UTC).isoformat()
        return [*self.records, {"at": at, "level": "WARNING", "logger": ENGINE_LOGGER, "message": message}]


def clean(text: str) -> str:
    """``text`` as the database stores it: no NUL, no lone surrogate."""
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


current: ContextVar[Buffer | None] = ContextVar("durable_capture", default=None)


class CaptureHandler(logging.Handler):
    """Appends each record to the buffer of the attempt running in this context, if any."""

    def emit(self, record: logging.LogRecord) -> None:
        buffer = current.get()
        if buffer is None or record.levelno < buffer.level:
            return
        name = record.name
        if name == ENGINE_LOGGER or name.startswith(ENGINE_LOGGER + "."):
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        except Exception:
            message = f"{record.msg!r} {record.args!r}"
        buffer.add(record.levelname, name, message)


class PrintProxy:
    """``sys.stdout`` while print capture is on: writes to the current attempt's buffer, else falls through."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self.pending: ContextVar[str] = ContextVar("durable_print", default="")

    def write(self, text: str) -> int:
        buffer = current.get()
        if buffer is None:
            return self.target.write(text)
        lines = (self.pending.get() + text).split("\n")
        for line in lines[:-1]:
            buffer.add("INFO", "print", line)
        self.pending.set(lines[-1])
        return len(text)

    def flush_pending(self) -> None:
        buffer, rest = current.get(), self.pending.get()
        if buffer is not None and rest:
            buffer.add("INFO", "print", rest)
        self.pending.set("")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


HANDLER = CaptureHandler(level=logging.NOTSET)


def install() -> None:
    """Put the handler on the root logger (once)."""
    root = logging.getLogger()
    if HANDLER not in root.handlers:
        root.addHandler(HANDLER)


@contextmanager
def capture() -> Iterator[Buffer | None]:
    """Capture what is logged in this context while the block runs; ``None`` when capture is off."""
    if not durable_settings.CAPTURE_LOGS:
        yield None
        return
    install()
    buffer = Buffer(
        durable_settings.CAPTURE_LOGS_LEVEL,
        durable_settings.CAPTURE_LOGS_MAX_RECORDS,
        durable_settings.CAPTURE_LOGS_MAX_BYTES,
    )
    proxy = None
    if durable_settings.CAPTURE_PRINT:
        if not isinstance(sys.stdout, PrintProxy):
            sys.stdout = PrintProxy(sys.stdout)
        proxy = sys.stdout
    token = current.set(buffer)
    # The logger's own level may drop records before the handler sees them: lower the root's if needed.
    root = logging.getLogger()
    if root.level > buffer.level:
        root.setLevel(buffer.level)
    try:
        yield buffer
    finally:
        if isinstance(proxy, PrintProxy):
            proxy.flush_pending()
        current.reset(token)
