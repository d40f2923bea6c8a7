"""Progress: rich bars per blob on a terminal, one plain line per finished blob otherwise."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """Thread-safe; ``task(label, total)`` returns an advance callback, ``finish(label, status)``."""

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.rich: Any = None
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        if enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self.rich = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), console=Console(file=self.stream),
                                     transient=False)

    def __enter__(self) -> Progress:
        if self.rich is not None:
            self.rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rich is not None:
            self.rich.stop()

    def task(self, label: str, total: int | None) -> Callable[[int], None]:
        if self.rich is None:
            return lambda n: None
        with self._lock:
            task_id = self.rich.add_task(label, total=total)
            self._tasks[label] = task_id
        return lambda n: self.rich.advance(task_id, n)

    def finish(self, label: str, status: str) -> None:
        if not self.enabled:
            return
        if self.rich is not None:
            task_id = self._tasks.get(label)
            if task_id is not None:
                self.rich.update(task_id, description=f"{label} {status}",
                                 completed=self.rich.tasks[task_id].total or 0)
            else:
                self.rich.console.print(f"{label}: {status}")
            return
        with self._lock:
            print(f"{label}: {status}", file=self.stream, flush=True)

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.rich is not None:
            self.rich.console.print(text)
        else:
            with self._lock:
                print(text, file=self.stream, flush=True)
