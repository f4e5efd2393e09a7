"""Structured JSON logs that carry the correlation id (the feedback id) of the work at hand."""

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation",
                                                                          default=None)


@contextmanager
def correlation(correlation_id: str | None) -> Iterator[None]:
    token = _correlation.set(correlation_id)
    try:
        yield
    finally:
        _correlation.reset(token)


def set_correlation(correlation_id: str | None) -> None:
    _correlation.set(correlation_id)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.correlation_id = _correlation.get()
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(correlation_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    ))
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("qms.faststream").setLevel(logging.WARNING)
    for noisy in ("pymongo", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
