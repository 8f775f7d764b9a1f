"""A wall-clock limit for pure-Python work that holds on any thread.

math-verify's own timeout arms ``signal.alarm`` with whole seconds and refuses (ValueError) to
run outside the main thread. `time_limit` takes fractional seconds and works everywhere:
- on the main thread it arms ``signal.setitimer``; the timer re-fires every
  `REFIRE_SECONDS` until disarmed, in case library code swallows the first interruption;
- on any other thread (signals reach only the main one) it installs a ``sys.setprofile`` hook
  on that thread which checks the clock at every Python and C function call and return.
Either way `TimeLimitExceeded` is raised inside the block, and the timer, signal handler or
profile hook that was in place before is restored afterwards (an outer timer keeps its
remaining time).

Neither can interrupt one long C call (a huge integer power): callers screen their input for
that (see `care.verify.mathexpr.screen_expression`).

Neither raises while the interrupted code is inside Python's import machinery: an exception
there can skip the release of a module lock, and every other thread importing that module then
waits forever (seen with lmms-eval's scoring threads). The check is repeated at the next event
(profile) or re-fire (signal), so the limit is late by at most the import's remaining time.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

REFIRE_SECONDS = 0.05


def _inside_import(frame: FrameType | None) -> bool:
    """Whether any frame of the stack belongs to importlib's bootstrap (module locks live there)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class TimeLimitExceeded(BaseException):
    """Raised inside a `time_limit` block when its time is up.

    A BaseException on purpose: libraries that catch ``Exception`` (math-verify does) must not
    swallow it.
    """


@contextmanager
def time_limit(seconds: float) -> Iterator[str]:
    """Raise `TimeLimitExceeded` inside the block after `seconds` of wall time.

    Yields the mechanism in use: ``"signal"`` (main thread) or ``"profile"`` (other threads).

    Example::

        try:
            with time_limit(0.5):
                slow_pure_python_call()
        except TimeLimitExceeded:
            ...  # about 0.5 s later
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"seconds must be a number > 0, got {seconds!r}")
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with _signal_limit(seconds):
            yield "signal"
    else:
        with _profile_limit(seconds):
            yield "profile"


@contextmanager
def _signal_limit(seconds: float) -> Iterator[None]:
    armed = True

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        # The alarm can land after the block finished but before the timer is disarmed; inside
        # an import it waits for the next re-fire.
        if armed and not _inside_import(frame):
            raise TimeLimitExceeded(f"time limit of {seconds} s exceeded")

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(
        signal.ITIMER_REAL, seconds, REFIRE_SECONDS
    )
    try:
        yield
    finally:
        # First statement, before any call: CPython runs signal handlers only at calls and
        # jumps, so from here on the handler cannot raise.
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        # None means a handler installed outside Python; the default is the closest we can do.
        signal.signal(
            signal.SIGALRM, previous_handler if previous_handler is not None else signal.SIG_DFL
        )
        if previous_delay > 0:
            remaining = max(previous_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


@contextmanager
def _profile_limit(seconds: float) -> Iterator[None]:
    deadline = time.monotonic() + seconds

    def on_event(frame: FrameType, event: str, arg: Any) -> None:
        # CPython removes a profile hook that raises, so this fires once per block.
        if time.monotonic() > deadline and not _inside_import(frame):
            raise TimeLimitExceeded(f"time limit of {seconds} s exceeded")

    previous_hook = sys.getprofile()
    sys.setprofile(on_event)
    try:
        yield
    finally:
        sys.setprofile(previous_hook)
