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


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(scrub(fields))
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
