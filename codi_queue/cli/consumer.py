"""``run`` and ``status``: the consumer, and what it reports."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from ..fsutil import is_dir
from .command import JSON, command, count_in, opt, seconds
from .exits import EXIT_FAILURE, EXIT_OK, say

NICE = 10  # the consumer's default niceness (run --nice)

if TYPE_CHECKING:
    import argparse

    from ..consumer.loop import Consumer, ConsumerStats
    from ..paths import Paths


@command(
    "run",
    help="run the consumer (the only writer of the databases)",
    description="Drain the spool into the tier databases in large transactions, and keep waiting for more "
                "until stopped (SIGTERM or Ctrl-C finish the batch in hand). With [sync] set it also pushes "
                "to the team database.",
    examples=["codi-queue run", "codi-queue run --once -v"],
    options=[
        opt("--once", action="store_true", help="drain what is queued, then exit"),
        opt("--batch", type=count_in(1, 10_000_000), default=20_000, help="operations per transaction (default 20000)"),
        opt("--poll", type=seconds, default=2.0, help="safety-net poll interval in seconds (default 2)"),
        opt("--rotate-bytes", type=count_in(1, 2**62), default=16 * 1024 * 1024,
            help="claim and archive the inbox once it holds this many bytes (default 16 MiB)"),
        opt("--no-push", action="store_true",
            help="do not push to the team database even if [sync] is set (push with `sync push` instead)"),
        opt("--nice", type=int, default=NICE,
            help=f"lower the consumer's CPU priority by this much, 0-19 (default {NICE}; 0 keeps it): under load "
                 "producers come first and what they append waits in the spool"),
        opt("-v", "--verbose", action="store_true", help="log every batch"),
    ],
)
def run(args: argparse.Namespace, paths: Paths) -> int:
    from ..config import load_config
    from ..consumer.logfile import configure_logging
    from ..consumer.loop import Consumer

    lowered = _lower_priority(args.nice)  # first: every thread started from here on inherits it
    configure_logging(paths.consumer_log, verbose=args.verbose)
    if lowered:
        import logging

        logging.getLogger("codi_queue.consumer").warning("%s", lowered)
    consumer = Consumer(paths, batch_ops=max(1, args.batch), poll_interval=max(0.05, args.poll),
                        rotate_bytes=max(1, args.rotate_bytes), config=load_config(paths))
    sync = consumer.config.sync if consumer.config else None
    if sync is not None and sync.push and not args.once and not args.no_push:
        from ..config import redact_url
        from ..sync.background import PushThread

        pushing = f"; pushing {', '.join(sync.push)} to {redact_url(sync.url)} as {sync.machine}"
        with PushThread(paths, sync) as pusher:
            consumer.on_commit = pusher.wake
            stats = _run(consumer, args, paths, pushing)
    else:
        stats = _run(consumer, args, paths, "")
    if args.once or args.verbose:
        say(f"{stats.operations} operations in {stats.batches} batches, {stats.applied} rows changed, "
            f"{stats.dead_letters} dead letters")
    return EXIT_OK


def _lower_priority(by: int) -> str | None:
    """Lower this process's CPU priority (what ``ProcessType=Background`` does under launchd);
    why it could not, or None. A producer waits on its own sync, never on the consumer, so on a
    busy machine the consumer's CPU only delays them: 16 producers on 2 cores, storm p99 11.5
    against 8.8 ms with the consumer at nice 10 (docs/benchmarks.md, session 9)."""
    by = max(0, min(19, by))
    if not by:
        return None
    try:
        os.nice(by)
    except OSError as exc:
        return f"could not lower the consumer's priority by {by}: {exc.strerror or exc}"
    return None


def _run(consumer: Consumer, args: argparse.Namespace, paths: Paths, pushing: str) -> ConsumerStats:
    def started() -> None:
        from ..schemas.registry import TIERS

        dbs = ", ".join(f"{t} {paths.database(t)}" for t in TIERS)
        what = "draining what is queued" if args.once else "waiting for operations (Ctrl-C stops it)"
        say(f"consumer for home {paths.home} ({paths.source}); databases: {dbs}; {what}{pushing}")
        sys.stderr.flush()

    return consumer.run(once=args.once, on_start=started)


@command(
    "status",
    help="queue depth, lag, dead letters, consumer liveness",
    description="What is queued and how old, whether the consumer runs and keeps up, dead letters, recent "
                "errors and the team push.",
    examples=["codi-queue status", "codi-queue status --json", "codi-queue status --prometheus /var/lib/node/codi.prom"],
    options=[
        JSON,
        opt("--watch", action="store_true", help="refresh in place until Ctrl-C"),
        opt("--interval", type=seconds, default=2.0, help="seconds between refreshes with --watch"),
        opt("--prometheus", metavar="FILE", help="write the Prometheus textfile format to FILE (- for stdout); an existing FILE must be one it wrote"),
    ],
)
def status(args: argparse.Namespace, paths: Paths) -> int:
    from ..consumer.status import collect, prometheus_text, render_human

    if not is_dir(paths.home):
        say(f"no codi-queue home at {paths.home} ({paths.source}): nothing was ever enqueued or run there")
        return EXIT_FAILURE
    if args.prometheus:
        text = prometheus_text(collect(paths))
        if args.prometheus == "-":
            sys.stdout.write(text)
        else:
            from ..consumer.status import write_textfile

            write_textfile(args.prometheus, text, paths)
        return EXIT_OK

    def render() -> str:
        report = collect(paths)
        return json.dumps(report, indent=2, sort_keys=True) if args.json else render_human(report, paths.home)

    if not args.watch:
        print(render())
        return EXIT_OK
    import signal
    import threading

    from ..signals import calling_on

    # Ctrl-C (or a TERM) only ends the loop once the refresh under way finishes.
    # A KeyboardInterrupt raised wherever it lands could be swallowed ("Exception
    # ignored in ...") if it hit a destructor inside collect(), and a handler
    # that set the Event itself could hang on the lock stop.wait() holds.
    stop = threading.Event()
    with calling_on((signal.SIGINT, signal.SIGTERM), lambda _signum: stop.set()):
        while not stop.is_set():
            sys.stdout.write("\x1b[H\x1b[2J" + render() + f"\n\n(every {args.interval:g}s; Ctrl-C to stop)\n")
            sys.stdout.flush()
            stop.wait(max(0.2, args.interval))
    return EXIT_OK
