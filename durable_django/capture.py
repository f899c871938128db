"""Per-attempt log capture: what a step logs (and optionally prints) while it runs, kept with its attempt.

One handler on the root logger appends each record to the buffer of the attempt running in the
current context (a :class:`contextvars.ContextVar`): threads, and the branches a batch executes one
after another, each see only their own. Records of the engine's own ``durable_django`` loggers are
not captured: they are about the step, not from it.

The handler is put on the root logger by the first attempt that captures (never at import), and
checked for at each attempt, so a logging configuration applied later does not lose it. With
``DURABLE["CAPTURE_LOGS"] = False`` :func:`durable_django.attempts.call_step` does not come here at
all: no handler is installed, no buffer opened.

A handler on the root logger would otherwise change what happens to records that no other handler
takes: Python's "last resort" handler prints those (``WARNING`` and above) to stderr only when no
handler at all was found. The capture handler keeps that behaviour, so installing it changes
nothing for the rest of the process.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from .conf import durable_settings

MAX_MESSAGE = 4000
"""Characters kept of one message (its formatted exception included); longer ones end with ``…``."""

ENGINE_LOGGER = "durable_django"
PRINT_LOGGER = "print"


class Buffer:
    """The records of one attempt, within the configured caps.

    The first records are kept; once either cap is reached no later record is, and a final
    ``WARNING`` record of logger ``durable_django`` says how many were not kept, and which cap cut them.
    The byte cap counts the UTF-8 bytes of the messages kept.
    """

    def __init__(self, level: int, max_records: int, max_bytes: int, prints: bool = False) -> None:
        self.level = level
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.prints = prints
        self.records: list[dict[str, Any]] = []
        self.size = 0
        self.cut = 0
        self.cut_by = ""
        self.cut_at = ""
        # A step may hand its context to threads of its own (contextvars.copy_context): the caps hold.
        self._lock = threading.Lock()

    def add(self, level: str, logger: str, message: str, created: float | None = None) -> None:
        message = clean(message)
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "…"
        size = len(message.encode("utf-8"))
        at = (datetime.fromtimestamp(created, UTC) if created is not None else datetime.now(UTC)).isoformat()
        with self._lock:
            if not self.cut:
                if len(self.records) >= self.max_records:
                    self.cut_by = f"cap of {self.max_records} records"
                elif self.size + size > self.max_bytes:
                    self.cut_by = f"cap of {self.max_bytes} bytes"
                else:
                    self.size += size
                    self.records.append({"at": at, "level": level, "logger": logger, "message": message})
                    return
                self.cut_at = at
            self.cut += 1

    def result(self) -> list[dict[str, Any]]:
        """The records to store: those kept, and the record of the cut if there was one."""
        if not self.cut:
            return self.records
        plural = "s" if self.cut != 1 else ""
        message = f"{self.cut} more record{plural} not kept ({self.cut_by})"
        return [*self.records, {"at": self.cut_at, "level": "WARNING", "logger": ENGINE_LOGGER, "message": message}]


def clean(text: str) -> str:
    """``text`` as the database stores it: no NUL, no lone surrogate."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


current: ContextVar[Buffer | None] = ContextVar("durable_capture", default=None)


def _engine_logger(name: str) -> bool:
    return name == ENGINE_LOGGER or name.startswith(ENGINE_LOGGER + ".")


class CaptureHandler(logging.Handler):
    """Appends each record to the buffer of the attempt running in this context, if any."""

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: each buffer belongs to one context (and has a lock of its own), so
        # records of other threads never wait for this one.
        last = logging.lastResort
        if last is not None and record.levelno >= last.level and _unhandled(record):
            last.handle(record)
        buffer = current.get()
        if buffer is None or record.levelno < buffer.level or _engine_logger(record.name):
            return False
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        except Exception:
            message = f"{record.msg!r} {record.args!r}"
        buffer.add(record.levelname, record.name, message, record.created)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


def _unhandled(record: logging.LogRecord) -> bool:
    """Whether no handler but the capture handler takes ``record``: then Python would have given it to
    its last resort. Asked only of records at the last resort's level (``WARNING``) and above."""
    logger: logging.Logger | None = logging.Logger.manager.loggerDict.get(record.name)  # type: ignore[assignment]
    if not isinstance(logger, logging.Logger):
        logger = logging.getLogger()
    while logger is not None:
        if any(not isinstance(handler, CaptureHandler) for handler in logger.handlers):
            return False
        if not logger.propagate:
            break
        logger = logger.parent
    return True


class PrintProxy:
    """``sys.stdout`` once print capture was on: what an attempt that captures prints is also kept as
    records of logger ``print``, one per line; everything is written to the real stdout as before."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self.pending: ContextVar[str] = ContextVar("durable_print", default="")

    def write(self, text: str) -> int:
        written = self.target.write(text)
        buffer = current.get()
        if buffer is not None and buffer.prints:
            lines = (self.pending.get() + text).split("\n")
            for line in lines[:-1]:
                buffer.add("INFO", PRINT_LOGGER, line)
            self.pending.set(lines[-1])
        return written

    def flush_pending(self) -> None:
        """Keep a last line printed without its newline."""
        buffer, rest = current.get(), self.pending.get()
        if buffer is not None and buffer.prints and rest:
            buffer.add("INFO", PRINT_LOGGER, rest)
        self.pending.set("")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


_handler: CaptureHandler | None = None
_install_lock = threading.Lock()


def handler() -> CaptureHandler:
    """The one capture handler of the process (made the first time it is asked for)."""
    global _handler
    if _handler is None:
        with _install_lock:
            if _handler is None:
                _handler = CaptureHandler()
    return _handler


def installed() -> bool:
    """Whether the capture handler is on the root logger."""
    return _handler is not None and _handler in logging.getLogger().handlers


def install(level: int) -> None:
    """Put the handler on the root logger (once), and let records of ``level`` reach it.

    A logger drops a record below its effective level before any handler sees it; most loggers
    take theirs from the root logger (``WARNING`` unless configured). When the root's level is
    above ``level`` it is lowered to it, and the root's other handlers that had no level of their
    own get the root's former one: what they write does not change.
    """
    root = logging.getLogger()
    capturing = handler()
    if capturing not in root.handlers:
        root.addHandler(capturing)  # under logging's own lock, which also keeps it from being added twice
    if root.level > level:
        with _install_lock:
            former = root.level
            if former > level:
                for other in root.handlers:
                    if other is not capturing and other.level == logging.NOTSET:
                        other.setLevel(former)
                root.setLevel(level)


@contextmanager
def capture() -> Iterator[Buffer]:
    """Capture what is logged (and printed, with ``CAPTURE_PRINT``) in this context while the block runs."""
    buffer = Buffer(
        durable_settings.CAPTURE_LOGS_LEVEL,
        durable_settings.CAPTURE_LOGS_MAX_RECORDS,
        durable_settings.CAPTURE_LOGS_MAX_BYTES,
        durable_settings.CAPTURE_PRINT,
    )
    install(buffer.level)
    proxy = None
    if buffer.prints:
        if not isinstance(sys.stdout, PrintProxy):
            with _install_lock:
                # Checked again under the lock: a proxy around a proxy would keep each line twice.
                if not isinstance(sys.stdout, PrintProxy):
                    sys.stdout = PrintProxy(sys.stdout)
        proxy = sys.stdout
    token = current.set(buffer)
    try:
        yield buffer
    finally:
        if isinstance(proxy, PrintProxy):
            proxy.flush_pending()
        current.reset(token)
