"""Structured JSON logs with trace ids, scrubbed of personal identity numbers.

Every record passes a filter that masks any 11-digit run (fødselsnummer, D- and
H-numbers), whatever field or argument it hides in, so a careless log call cannot leak one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from opentelemetry import trace

_PID_PATTERN = re.compile(r"(?<!\d)\d{11}(?!\d)")
MASK = "<pid>"


def scrub(value: Any) -> Any:
    """Mask identity numbers in strings, recursively in dicts and lists."""
    if isinstance(value, str):
        return _PID_PATTERN.sub(MASK, value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, int) and 10_000_000_000 <= abs(value) < 100_000_000_000:
        return MASK
    return value


# Built once (json.dumps with options builds an encoder per call; one line per RPC).
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _clean(value: Any) -> bool:
    """Whether scrub(value) would leave it as it is (one search per string, no copies):
    most log fields (methods, codes, client ids, durations) hold nothing to mask."""
    if isinstance(value, str):
        return _PID_PATTERN.search(value) is None
    if isinstance(value, dict):
        return all(_clean(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_clean(v) for v in value)
    if isinstance(value, int):
        return not 10_000_000_000 <= abs(value) < 100_000_000_000
    return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        # (second, its ISO text): one line per RPC, many per second.
        self._second: tuple[int, str] = (-1, "")

    def _timestamp(self, record: logging.LogRecord) -> str:
        second, text = self._second
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": message if _clean(message) else scrub(message),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields if _clean(fields) else scrub(fields))
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return _ENCODER.encode(entry)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_fields(**fields: Any) -> dict[str, Any]:
    """`logger.info("msg", extra=log_fields(a=1))`: structured fields on a record."""
    return {"fields": fields}
