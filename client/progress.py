"""Progress: rich bars per blob on a terminal (done/total in docker's units, speed, ETA, then an
"extracting" phase on pull), one plain line per finished blob otherwise."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Any


def human(n: float) -> str:
    """docker's size style everywhere (storage/units.py): ``7.55MB``."""
    from pyreg.storage.units import human_size

    return human_size(n)


def _columns() -> tuple[Any, ...]:
    """docker's bar: ``label [=====>    ] 12.3MB/45.6MB``, plus speed and time left."""
    from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Sizes(ProgressColumn):
        def render(self, task: Any) -> Text:
            done = human(task.completed)
            return Text(f"{done}/{human(task.total)}" if task.total is not None else done)

    class Speed(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{human(speed)}/s" if speed and not task.finished else "")

    return (TextColumn("{task.description}"), BarColumn(), Sizes(), Speed(),
            TimeRemainingColumn(elapsed_when_finished=False))


class Progress:
    """Thread-safe; ``task(label, total)`` returns an advance callback, ``finish(label, status)``."""

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.rich: Any = None
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._extracted: set[str] = set()
        if enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self.rich = RichProgress(*_columns(), console=Console(file=self.stream), transient=False)

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
        if label in self._extracted:
            status += ", extracted"
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

    def extracting(self, extractor: Any) -> Any:
        """``extractor`` (LocalStore's) wrapped so that a layer's bar says ``extracting`` while it
        is unpacked after its download, and its final status ends in ``extracted``; the label is
        the blob's short digest, as the transfer's."""
        if extractor is None or not self.enabled:
            return extractor

        def wrapped(blob_path: Any, *args: Any, **kwargs: Any) -> Any:
            label = str(blob_path).rsplit("/", 1)[-1][:12]
            if self.rich is not None:
                task_id = self._tasks.get(label)
                if task_id is None:  # downloaded before, extracted now
                    with self._lock:
                        task_id = self._tasks[label] = self.rich.add_task(f"{label} extracting", total=None)
                else:
                    self.rich.update(task_id, description=f"{label} extracting")
            result = extractor(blob_path, *args, **kwargs)
            with self._lock:
                self._extracted.add(label)
            return result

        return wrapped

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.rich is not None:
            self.rich.console.print(text)
        else:
            with self._lock:
                print(text, file=self.stream, flush=True)
