"""Logging setup for ``pyreg serve``: plain text or one JSON object per line (``log.format``).

Access log lines come from registry/accesslog.py (logger ``pyreg.access``, one per request); in
JSON mode their parts (method, path, status, bytes, duration, remote address, user, request id)
become fields, so log shippers need no parsing. uvicorn's own access log is off.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any


class JSONFormatter(logging.Formatter):
    """``log.format: json`` (or Distribution's ``logstash``: ``@timestamp``, ``@version``,
    ``message``), with ``log.fields`` in every entry."""

    def __init__(self, fields: dict[str, Any] | None = None, logstash: bool = False) -> None:
        super().__init__()
        self.fields = dict(fields or {})
        self.logstash = logstash

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            **self.fields,
        }
        args = record.args
        access = getattr(record, "access", None)
        if isinstance(access, dict):  # registry/accesslog.py: one request, all its fields
            entry.update(msg="request", **access)
        elif record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, protocol, status = args
            entry.update(msg="request", client=client, method=method, path=path, protocol=f"HTTP/{protocol}",
                         status=status)
        else:
            entry["msg"] = record.getMessage()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        if self.logstash:
            entry["@timestamp"] = entry.pop("time")
            entry["@version"] = "1"
            entry["message"] = entry.pop("msg")
        return json.dumps(entry, default=str)


def log_config(level: str, fmt: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict for uvicorn and the registry's own loggers."""
    level = "WARNING" if level.lower() == "warn" else level.upper()
    formatter: dict[str, Any]
    if fmt in ("json", "logstash"):
        formatter = {"()": "registry.logs.JSONFormatter", "fields": dict(fields or {}),
                     "logstash": fmt == "logstash"}
    else:  # text: the fields as key=value after the message, as Distribution's text formatter does
        extra = "".join(f" {k}={v}" for k, v in (fields or {}).items()).replace("%", "%%")
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s" + extra}
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "INFO", "propagate": True},
            "pyreg.access": {"handlers": [], "level": "INFO", "propagate": True},
            # httpx logs every request it sends (webhook deliveries) at INFO: only from debug on
            "httpx": {"handlers": [], "level": "DEBUG" if level == "DEBUG" else "WARNING", "propagate": True},
        },
    }
