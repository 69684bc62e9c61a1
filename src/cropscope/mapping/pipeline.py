"""The map job's threads: read ahead, write behind, bounded, stopped cleanly on any error.

A map job has three kinds of work per window: reading and decoding its input (rasterio and
numpy release the GIL), predicting it (numpy, BLAS, LightGBM and torch release it too) and
writing its outputs with the journal (GDAL releases it). Run one after another they add up;
in three threads they overlap, so on two cores a window costs about as long as its slowest
stage. :class:`ReadAhead` runs the first stage in a thread ``depth`` windows ahead of the
caller; :class:`WriteBehind` runs the last in a thread behind it, in the order given.

Both are bounded (a full queue blocks the stage in front of it, so memory stays at a few
windows) and both fail cleanly: an error in a thread is raised in the caller (the same
exception object, ``BaseException`` included), nothing is written after a failed write,
and no thread outlives the call that started it (:meth:`ReadAhead.close`,
:meth:`WriteBehind.abort` join it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["ReadAhead", "WriteBehind"]

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()
_POLL_S = 0.1  # how often a blocked thread checks whether it should stop


class ReadAhead(Generic[T, R]):
    """``(item, read(item))`` for each item, ``read`` running in a thread up to ``depth``
    items ahead of the caller. Use as an iterator; :meth:`close` in a ``finally``."""

    def __init__(self, items: Iterable[T], read: Callable[[T], R], depth: int = 1,
                 name: str = "cropscope-read") -> None:  # fmt: skip
        self._items = iter(items)
        self._read = read
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, entry: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set():
                    return
                if not self._put((item, self._read(item))):
                    return
        except BaseException as exc:  # handed to the caller, whatever it is
            self._put(exc)
        else:
            self._put(_DONE)

    def __iter__(self) -> Iterator[tuple[T, R]]:
        while True:
            entry = self._queue.get()
            if entry is _DONE:
                return
            if isinstance(entry, BaseException):
                raise entry
            yield entry

    def close(self) -> list[R]:
        """Stop the thread, wait for it, and return what it read but nobody took (so the
        caller can release it)."""
        self._stop.set()
        left: list[R] = []
        while self._thread.is_alive() or not self._queue.empty():
            try:
                entry = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(entry, tuple):
                left.append(entry[1])
        self._thread.join()
        return left


class WriteBehind(Generic[T]):
    """Calls ``write(item)`` for each :meth:`put` item in a thread, in order, up to
    ``depth`` items behind the caller. The first error stops it: later items are dropped
    and the error is raised by the next :meth:`put` or by :meth:`finish`."""

    def __init__(self, write: Callable[[T], None], depth: int = 2,
                 name: str = "cropscope-write") -> None:  # fmt: skip
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _DONE or self._stop.is_set():
                return
            try:
                self._write(item)
            except BaseException as exc:  # raised in the caller
                self._error = exc
                return

    def _raise(self) -> None:
        if self._error is not None:
            self._thread.join()
            raise self._error

    def put(self, item: T) -> None:
        """Queue ``item`` (blocks while ``depth`` items wait); raises a write's error."""
        while True:
            self._raise()
            if not self._thread.is_alive():
                raise RuntimeError("the writer thread stopped")  # pragma: no cover
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every item is written; raises a write's error."""
        while self._thread.is_alive():
            self._raise()
            try:
                self._queue.put(_DONE, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop after the item being written (the rest are dropped) and wait; never
        raises (the caller is already handling an error)."""
        self._stop.set()
        self._thread.join()
