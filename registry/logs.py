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
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
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
        return json.dumps(entry, default=str)


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict for uvicorn and the registry's own loggers."""
    level = "WARNING" if level.lower() == "warn" else level.upper()
    formatter: dict[str, Any] = (
        {"()": "registry.logs.JSONFormatter"} if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
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
