"""The orchestrator: runs the daemon's cycle on a schedule, and stops it cleanly.

    orchestrator = Orchestrator(cycle, settings.scheduler)
    orchestrator.run_once()       # one cycle now: the exit status (see below)
    orchestrator.run_forever()    # until SIGTERM/SIGINT (or stop()): the exit status

The framework knows no agent: it is handed `cycle`, a function of no arguments. Whatever
the cycle returns is logged with its `summary()` (if it has one) and judged by its `ok`
attribute (if it has one; otherwise returning is success). The cycle may watch
`orchestrator.stopping` (a `threading.Event`) to stop between its steps.

Scheduling: APScheduler 3.x `BackgroundScheduler` with one worker thread and one job: an
`IntervalTrigger` of `scheduler.interval_minutes`, `max_instances=1` (cycles never overlap: a tick that falls while a cycle runs is
skipped), `coalesce=True` (missed ticks run once, not in a burst) and a misfire grace of
one interval. With `scheduler.run_at_start` the first cycle runs at once. Each scheduled
cycle then waits a random `scheduler.jitter_s` at most before it starts (`_jittered_cycle`,
interrupted by a stop): the ticks stay on the grid. APScheduler's own jitter adds each
delay to the previous, already delayed, tick, so the schedule drifts later and later
(measured: +30 s a cycle at the default 60 s, a week of 30-minute ticks taking 8 days at 600 s).

Shutdown: the first SIGTERM or SIGINT sets `stopping` and cancels every HTTP request in
flight (`deals.framework.deadline.cancel_requests`: a feed, page, LLM or Twilio request
raises `Cancelled` within a fraction of a second), so the running cycle ends at once at
the step it was in; the main thread waits for it. Every write of a cycle is its own
SQLite transaction, so nothing is half-written. Should the cycle still be busy after
`stop_grace_s` (CPU-bound work), or on a second signal, the process exits at once: the
store is crash-safe, so that too loses nothing, and the next start marks the run
interrupted. Signal handlers are installed only from the main thread and restored on
return.

Exit status: `run_once` 0 when the cycle ran to its end, 1 when it crashed or failed (no feed read);
both modes 130 after SIGINT (Ctrl-C) and, for `run_once`, 143 after SIGTERM (the cycle
did not finish); `run_forever` stopped by SIGTERM or `stop()` returns 0, a clean service
stop. A forced exit (grace over, second signal) is 128 + the signal number.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from deals.framework import deadline
from deals.framework.errors import Cancelled
from deals.framework.settings import SchedulerSettings

log = logging.getLogger("deals.framework.orchestrator")

Cycle = Callable[[], Any]
JOB_ID = "deals-cycle"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_GRACE_S = 10.0


def describe(result: Any) -> str:
    """The cycle's own one-line summary, if it has one."""
    summary = getattr(result, "summary", None)
    if callable(summary):
        return str(summary())
    return "cycle finished" if result is None else f"cycle finished: {result}"


class Orchestrator:
    """Runs `cycle` once or on an interval; see the module docstring."""

    def __init__(
        self,
        cycle: Cycle,
        settings: SchedulerSettings,
        *,
        install_signals: bool = True,
        poll_s: float = 0.5,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.cycle = cycle
        self.settings = settings
        self.install_signals = install_signals
        self.poll_s = poll_s
        self.stop_grace_s = stop_grace_s
        self.stopping = threading.Event()
        self.cycles = 0
        self.failures = 0
        self.signal: int | None = None
        self._signals_seen = 0
        self._scheduler: BackgroundScheduler | None = None
        self._watchdog: threading.Timer | None = None
        self._unjittered = 0  # scheduled cycles still to run without the jitter delay (the one at start)
        self._running = False

    # ------------------------------------------------------------------ one cycle

    def run_cycle(self) -> bool:
        """Run the cycle once, logging what it did; True when it ran to its end."""
        if self.stopping.is_set():
            return True
        started = time.perf_counter()
        try:
            result = self.cycle()
        except Cancelled:  # a cycle that does not handle shutdown itself: stopped, not crashed
            self.cycles += 1
            log.info("cycle stopped after %.2fs: shutting down", time.perf_counter() - started)
            return True
        except Exception:  # noqa: BLE001 - a crashed cycle is logged; the daemon lives on
            self.cycles += 1
            self.failures += 1
            log.exception("cycle crashed after %.2fs; the next one runs as scheduled", time.perf_counter() - started)
            return False
        self.cycles += 1
        ok = bool(getattr(result, "ok", True))
        if not ok:
            self.failures += 1
        log.log(logging.INFO if ok else logging.WARNING, "%s", describe(result))
        job = self._scheduler.get_job(JOB_ID) if self._scheduler is not None and self._scheduler.running else None
        if job is not None and job.next_run_time is not None and not self.stopping.is_set():
            log.info("next cycle at %s", job.next_run_time.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
        return ok

    def run_once(self) -> int:
        """One cycle now: exit status 0 when it ran to its end, 1 when it crashed or failed, 128+N after signal N."""
        deadline.allow_requests()
        self._running = True
        try:
            with self._signal_handlers():
                ok = self.run_cycle()
        finally:
            self._finish()
        if self.signal is not None:
            return 128 + self.signal
        return 0 if ok else 1

    # ------------------------------------------------------------------ the daemon

    def build_scheduler(self) -> BackgroundScheduler:
        """The scheduler with the cycle job added (not started)."""
        interval_s = self.settings.interval_minutes * 60.0
        job_options: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": max(1, int(interval_s))}
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)}, job_defaults=job_options, timezone=timezone.utc
        )
        trigger = IntervalTrigger(seconds=interval_s, timezone=timezone.utc)
        options: dict[str, Any] = dict(job_options)
        self._unjittered = 0
        if self.settings.run_at_start:
            options["next_run_time"] = datetime.now(timezone.utc)
            self._unjittered = 1  # the cycle at start runs at once
        scheduler.add_job(self._jittered_cycle, trigger, id=JOB_ID, name="deals cycle", replace_existing=True, **options)
        scheduler.add_listener(self._on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        return scheduler

    def run_forever(self) -> int:
        """Run cycles on schedule until `stop()` or a signal; the running cycle is let finish."""
        scheduler = self.build_scheduler()
        self._scheduler = scheduler
        deadline.allow_requests()
        self._running = True
        with self._signal_handlers():
            scheduler.start()
            job = scheduler.get_job(JOB_ID)
            log.info(
                "daemon started: a cycle every %g min (jitter %ds)%s; next at %s",
                self.settings.interval_minutes,
                self.settings.jitter_s,
                ", the first now" if self.settings.run_at_start else "",
                job.next_run_time.astimezone(timezone.utc).strftime("%H:%M:%S UTC") if job and job.next_run_time else "?",
            )
            try:
                while not self.stopping.wait(self.poll_s):
                    pass
            finally:
                log.info("shutting down: waiting for the running cycle to stop")
                scheduler.shutdown(wait=True)
                self._scheduler = None
                self._finish()
        log.info("daemon stopped after %d cycles (%d failed)", self.cycles, self.failures)
        return 130 if self.signal == signal.SIGINT else 0

    def _jittered_cycle(self) -> bool | None:
        """A scheduled cycle, after a random delay of at most `jitter_s` (none for the cycle at start)."""
        if self._unjittered:
            self._unjittered -= 1
        elif self.settings.jitter_s and self.stopping.wait(random.uniform(0, self.settings.jitter_s)):
            return None  # stopped while waiting: no cycle
        return self.run_cycle()

    def stop(self) -> None:
        """Ask the daemon to stop: requests in flight are cancelled, the running cycle ends at once."""
        self.stopping.set()
        if self._running:  # the process-wide cancellation is this orchestrator's only while it runs
            deadline.cancel_requests()

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _on_event(event: JobEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("a cycle is still running at the next tick: this tick is skipped")
        elif event.code == EVENT_JOB_MISSED:
            log.warning("a cycle missed its start time (system busy or suspended); it runs at the next tick")

    def _finish(self) -> None:
        self._running = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        deadline.allow_requests()

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals_seen += 1
        name = signal.Signals(signum).name
        if self._signals_seen > 1:
            log.warning("%s again: exiting now (the store is crash-safe; the cycle resumes next start)", name)
            os._exit(128 + signum)
        log.info("%s received: stopping (requests in flight are abandoned)", name)
        self.signal = signum
        self.stop()
        self._watchdog = threading.Timer(self.stop_grace_s, self._force_exit, args=(signum,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _force_exit(self, signum: int) -> None:
        log.warning(
            "the cycle did not stop within %gs: exiting now (the store is crash-safe; the run is marked interrupted next start)",
            self.stop_grace_s,
        )
        logging.shutdown()
        os._exit(128 + signum)

    def _signal_handlers(self) -> _SignalHandlers:
        return _SignalHandlers(self._handle_signal if self.install_signals else None)


class _SignalHandlers:
    """Installs a handler for SIGTERM/SIGINT for the duration of a block (main thread only)."""

    def __init__(self, handler: Callable[[int, FrameType | None], None] | None) -> None:
        self.handler = handler
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalHandlers:
        if self.handler is None:
            return self
        if threading.current_thread() is not threading.main_thread():
            log.debug("not in the main thread: signal handlers not installed")
            return self
        for sig in _SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        self.previous.clear()


__all__ = ["Cycle", "Orchestrator", "describe"]
