"""smtp-source's timeline: what each interval of a run did (--stats lines,
the report's charts), and how intervals of several processes or reports
are put together.

The Report (smtpcore/report.py) closes an interval every so often (the
--stats interval, or TIMELINE_INTERVAL): it hands back an Interval, with
the counts of that interval, a full latency histogram per phase, and the
run's totals so far.  From an Interval come

  * a --stats line (line()): one JSON object, the keys of smtp-sink's
    --stats lines where they mean the same (totals so far, "rates" per
    second over the interval, "replies"), and "interval": what happened in
    this interval alone, with p50/p99/max of each phase;
  * a timeline record (summary()), kept in the report: the interval's
    counts and, per phase, count, p50, p99, max and a sketch
    (smtpcore/latency.py), so that records of several reports add up.

A run's timeline has at most MAX_RECORDS records: past that, neighbours
are combined (rebin()), as they are when reports are merged.  With
--procs each worker sends its Intervals to the first process (Channel),
which puts each interval of all workers together into one line
(Collector).
"""

import collections
import json
import os
import selectors
import threading
import time

from smtpcore import engine, output
from smtpcore.latency import SparseHistogram, add_sketches, sketch_percentiles

TIMELINE_INTERVAL = 1.0         # seconds between records, without --stats
MAX_RECORDS = 1000              # then neighbours are combined (an hour at 1 s: 4 s)
COUNTS = ("sessions", "messages", "recipients", "bytes")

monotonic_ns = time.monotonic_ns


def ms(value):
    """Nanoseconds (or None) as milliseconds in a report."""
    return None if value is None else round(value / 1e6, 3)


def wall_clock(when_ns):
    """A moment of time.monotonic_ns() as Unix time (the run's start, for
    the report's "started" and the --stats lines' "time")."""
    return time.time() - (monotonic_ns() - when_ns) / 1e9


class Interval:
    """One interval of a run (or of every --procs worker at once).

    slot: the interval's number on the run's grid (1: the first; None:
    the line after the last); start, seconds: its place in the run;
    counts: {sessions, messages, recipients, bytes} in it; errors: {kind:
    count} in it; histograms: {phase: Histogram} of its latencies;
    totals: the run's figures so far (COUNTS, "errors", "replies",
    "active": connections open now)."""

    def __init__(self, slot, start, seconds, counts, errors, histograms, totals):
        self.slot, self.start, self.seconds = slot, start, seconds
        self.counts, self.errors = counts, errors
        self.histograms, self.totals = histograms, totals

    def latency(self, sketches=False):
        """{phase: {"count", "p50", "p99", "max"[, "sketch"]}} of the
        phases met in this interval, in milliseconds."""
        found = collections.OrderedDict()
        for phase, hist in self.histograms.items():
            p50, p99 = hist.percentiles((0.50, 0.99))
            row = collections.OrderedDict((("count", hist.count), ("p50", ms(p50)),
                                           ("p99", ms(p99)), ("max", ms(hist.max))))
            if sketches:
                row["sketch"] = hist.sketch()
            found[phase] = row
        return found

    def summary(self):
        """The timeline record of this interval (see the module's doc)."""
        record = collections.OrderedDict((("start", round(self.start, 3)),
                                          ("seconds", round(self.seconds, 3))))
        record.update(self.counts)
        record["errors"] = sum(self.errors.values())
        record["latency_ms"] = self.latency(sketches=True)
        return record

    def line(self, event, started):
        """A --stats line; started: the run's start (wall clock)."""
        totals, span = self.totals, self.seconds
        record = collections.OrderedDict((
            ("event", event), ("time", round(started + self.start + span, 3)),
            ("uptime", round(self.start + span, 3)), ("sessions", totals["sessions"]),
            ("active", totals["active"]), ("messages", totals["messages"]),
            ("recipients", totals["recipients"]), ("bytes", totals["bytes"]),
            ("rates", {name: round(self.counts[name] / span, 3) if span > 0 else 0.0
                       for name in COUNTS}),
            ("replies", totals["replies"]), ("errors", totals["errors"])))
        interval = collections.OrderedDict((("seconds", round(span, 3)),))
        interval.update(self.counts)
        interval["errors"] = {kind: count for kind, count in self.errors.items() if count}
        interval["latency_ms"] = self.latency()
        record["interval"] = interval
        return json.dumps(record) + "\n"

    # ---- --procs: from a worker to the first process

    def wire(self, final):
        """This interval as one JSON line for Channel."""
        return json.dumps({
            "slot": self.slot, "start": self.start, "seconds": self.seconds,
            "counts": self.counts, "errors": self.errors, "totals": self.totals,
            "histograms": {phase: hist.state() for phase, hist in self.histograms.items()},
            "final": final}) + "\n"

    @classmethod
    def from_wire(cls, data):
        return cls(data["slot"], data["start"], data["seconds"], data["counts"],
                   data["errors"], {phase: SparseHistogram.from_state(state) for phase, state
                                    in data["histograms"].items()}, data["totals"])

    @classmethod
    def combine(cls, intervals, totals):
        """The intervals of several workers with the same slot, as one;
        totals: the group's totals so far."""
        first = intervals[0]
        counts = dict.fromkeys(COUNTS, 0)
        errors = dict.fromkeys(first.errors, 0)
        histograms = collections.OrderedDict()
        for interval in intervals:
            for name in COUNTS:
                counts[name] += interval.counts[name]
            for kind, count in interval.errors.items():
                errors[kind] = errors.get(kind, 0) + count
            for phase, hist in interval.histograms.items():
                if phase not in histograms:
                    histograms[phase] = SparseHistogram()
                histograms[phase].merge(hist.state())
        start = min(interval.start for interval in intervals)
        end = max(interval.start + interval.seconds for interval in intervals)
        return cls(first.slot, start, end - start, counts, errors, histograms, totals)


def add_totals(many):
    """The sum of several Interval.totals."""
    total = {name: 0 for name in COUNTS + ("active",)}
    total["errors"], total["replies"] = {}, {}
    for totals in many:
        for name in COUNTS + ("active",):
            total[name] += totals[name]
        for key in ("errors", "replies"):
            for name, count in totals[key].items():
                total[key][name] = total[key].get(name, 0) + count
    total["replies"] = dict(sorted(total["replies"].items()))
    return total


# ------------------------------------------------------------- the records

def rebin(parts, interval):
    """Timeline records put on one grid of `interval` seconds.

    parts: [(offset, records)], each record's start counted from offset
    seconds after the grid's zero.  A record goes to the slot that holds
    its middle; the records of a slot add up (counts, sketches, max), and
    their p50 and p99 are read from the sketch (within 6.25 %) unless
    the slot holds just one record."""
    slots = {}
    for offset, records in parts:
        for record in records:
            middle = offset + record["start"] + record["seconds"] / 2
            slots.setdefault(int(middle // interval), []).append((offset, record))
    merged = []
    last = max(slots) if slots else None
    for slot in sorted(slots):
        group = slots[slot]
        start = slot * interval
        seconds = interval
        if slot == last:
            seconds = max(offset + record["start"] + record["seconds"]
                          for offset, record in group) - start
            seconds = min(interval, max(seconds, 0.001))
        out = collections.OrderedDict((("start", round(start, 3)),
                                       ("seconds", round(seconds, 3))))
        for name in COUNTS + ("errors",):
            out[name] = sum(record[name] for _, record in group)
        phases = collections.OrderedDict()
        for _, record in group:
            for phase, row in record["latency_ms"].items():
                phases.setdefault(phase, []).append(row)
        out["latency_ms"] = collections.OrderedDict(
            (phase, _combine_rows(rows)) for phase, rows in phases.items())
        merged.append(out)
    return merged


def _combine_rows(rows):
    if len(rows) == 1:
        return rows[0]
    sketch = add_sketches(row["sketch"] for row in rows)
    high = max(row["max"] for row in rows)
    p50, p99 = sketch_percentiles(sketch, (0.50, 0.99), int(high * 1e6))
    return collections.OrderedDict((("count", sum(row["count"] for row in rows)),
                                    ("p50", ms(p50)), ("p99", ms(p99)), ("max", high),
                                    ("sketch", sketch)))


class Timeline:
    """The records of a run, at most MAX_RECORDS (see rebin)."""

    def __init__(self, interval, records=None):
        self.interval = interval
        self.records = list(records or [])

    def append(self, record):
        self.records.append(record)
        if len(self.records) > MAX_RECORDS:
            self.interval *= 2
            self.records = rebin([(0.0, self.records)], self.interval)

    def merge(self, interval, records, offset=0.0):
        """Add another timeline's records (starting offset seconds after
        this one's), on the coarser of the two grids."""
        if not records:
            return
        self.interval = max(self.interval, interval)
        self.records = rebin([(0.0, self.records), (offset, records)], self.interval)
        while len(self.records) > MAX_RECORDS:
            self.interval *= 2
            self.records = rebin([(0.0, self.records)], self.interval)

    def as_dict(self):
        return collections.OrderedDict((("interval", self.interval),
                                        ("records", self.records)))


# --------------------------------------------------------- the ticker

class Ticker(engine.Waiter):
    """A session of the engine that closes an interval of the report every
    interval_ns from the start (on the beat, without bursts after a stall)
    and hands it to emit(interval).  active(): connections open now."""

    def __init__(self, report, emit, active):
        self.steps = self._ticks(report, emit, active)

    def _ticks(self, report, emit, active):
        interval_ns, slot = report.interval_ns, 1
        while True:
            wait = report.start_ns + slot * interval_ns - monotonic_ns()
            if wait > 0:
                yield wait / 1e9
            now = monotonic_ns()
            emit(report.tick(now, slot, active()))
            slot = max(slot + 1, (now - report.start_ns) // interval_ns + 1)


class LineWriter:
    """Writes --stats lines to a descriptor (a FILE opened for appending,
    or stderr), each whole (smtpcore/output.py: a failure is one warning,
    and never the end of the run).  start_ns: the run's start (monotonic);
    path: the FILE's name (None: stderr); msg: for the warning."""

    def __init__(self, fd, path, msg, start_ns):
        self.out = output.LineWriter(fd, "stderr" if path is None else path, msg)
        self.started = wall_clock(start_ns)
        self.lock = threading.Lock()

    def write(self, interval, event="interval"):
        data = interval.line(event, self.started).encode()
        with self.lock:
            self.out.write(data)

    def write_last(self, interval):
        self.write(interval, "exit")


# ---------------------------------------------------------------- --procs

class Channel:
    """A worker's end of a pipe to the first process: an Interval a line
    (the pipe's reading end is closed here)."""

    def __init__(self, pipes, index):
        for number, (read_fd, write_fd) in enumerate(pipes):
            os.close(read_fd)
            if number != index:
                os.close(write_fd)
        self.fd = pipes[index][1]

    def send(self, interval, final=False):
        data = interval.wire(final).encode()
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass                        # the first process is gone: nobody to tell
        if final:
            os.close(self.fd)
            self.fd = -1


class Collector:
    """In the first process of --procs: reads every worker's Intervals and
    writes one line per slot once each worker still running has got past
    it, the last one ("exit") when all have ended."""

    def __init__(self, workers, writer, intervals=True):
        """intervals: False with --stats=0 (the "exit" line only)."""
        self.pipes = [os.pipe() for _ in range(workers)]
        self.writer = writer
        self.intervals = intervals
        self.thread = None

    def channel(self, index):
        """In worker index."""
        return Channel(self.pipes, index)

    def start(self):
        """In the first process, after the workers were forked (a thread:
        run it while the group's signals are blocked)."""
        self.thread = threading.Thread(target=self._collect, name="stats", daemon=True)
        self.thread.start()

    def close_writers(self):
        """Once the workers run: drop the first process's copies of the
        pipes' writing ends, so that a worker's end shows as end of file."""
        for _, write_fd in self.pipes:
            try:
                os.close(write_fd)
            except OSError:
                pass

    def join(self, timeout):
        if self.thread is not None:
            self.thread.join(timeout)

    def _collect(self):
        selector = selectors.DefaultSelector()
        for index, (read_fd, _) in enumerate(self.pipes):
            selector.register(read_fd, selectors.EVENT_READ, index)
        pending = {index: collections.deque() for index in range(len(self.pipes))}
        buffers = dict.fromkeys(pending, b"")
        running, totals = set(pending), {}
        last = None
        try:
            while running:
                for key, _ in selector.select():
                    index = key.data
                    chunk = os.read(key.fd, 65536)
                    if not chunk:               # ended without a last line
                        selector.unregister(key.fd)
                        running.discard(index)
                        continue
                    lines = (buffers[index] + chunk).split(b"\n")
                    buffers[index] = lines.pop()
                    for line in lines:
                        data = json.loads(line.decode())
                        pending[index].append((Interval.from_wire(data), data["final"]))
                last = self._write_ready(pending, running, totals) or last
            if last is None or last.slot is not None:
                # (a worker died without its last line: the totals still end the lines)
                self.writer.write(Interval(None, last.start + last.seconds if last else 0.0,
                                           0.0, dict.fromkeys(COUNTS, 0), {}, {},
                                           add_totals(totals.values())), "exit")
        finally:
            selector.close()
            for read_fd, _ in self.pipes:
                os.close(read_fd)

    def _write_ready(self, pending, running, totals):
        """Write the lines of the slots that every running worker is past;
        returns the last Interval written, its slot None if it was the
        "exit" line."""
        written = None
        if not self.intervals:          # the workers' last lines, as one
            if running:
                return None
            group = []
            for index, queue in pending.items():
                for interval, _ in queue:
                    totals[index] = interval.totals
                    group.append(interval)
                queue.clear()
            if not group:
                return None
            written = Interval.combine(group, add_totals(totals.values()))
            self.writer.write(written, "exit")
            written.slot = None
            return written
        while True:
            heads = {index: queue[0] for index, queue in pending.items() if queue}
            if not heads or any(index not in heads for index in running):
                return written
            slot = min(interval.slot for interval, _ in heads.values())
            group = []
            for index, (interval, final) in heads.items():
                if interval.slot == slot:
                    pending[index].popleft()
                    totals[index] = interval.totals
                    group.append(interval)
                    if final:
                        running.discard(index)
            written = Interval.combine(group, add_totals(totals.values()))
            ended = not running and not any(pending.values())
            self.writer.write(written, "exit" if ended else "interval")
            if ended:
                written.slot = None
