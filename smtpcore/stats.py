"""smtp-sink --stats (and --verify's counts): JSON statistics lines.

One line (one JSON object) every --stats interval, one on SIGUSR1 and a
last one when the sink ends:

    {"event": "interval", "time": ..., "uptime": ..., "sessions": ...,
     "active": ..., "messages": ..., "recipients": ..., "bytes": ...,
     "rates": {...}, "replies": {"250": ..., ...}, "verify": {...}}

The figures are the sink's counters (for one process, or with --procs for
the whole group, in shared memory), read under their lock.  The interval
timer and the SIGUSR1 listener are two small sessions of the sink's
engine: the signal handler only writes a byte to a pipe that the listener
waits on, so a line is never written from inside a signal handler.
"""

import collections
import json
import os
import re
import threading
import time

from smtpcore import engine, output

STATS_INTERVAL = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)\Z")      # --stats=SECONDS
REPLY_CODE = re.compile(rb"^([0-9]{3})[ \r]", re.MULTILINE)    # a reply's last line
REPLY_NAMES = tuple("r%d" % code for code in range(200, 600))   # --procs: a counter a code


def parse_value(value):
    """--stats=SECONDS[,FILE], of either tool: (seconds, FILE), FILE None
    when it is empty or "-" (the tool's own stream); None when SECONDS is
    not a decimal number."""
    seconds, _, path = value.partition(",")
    if not STATS_INTERVAL.match(seconds):
        return None
    return float(seconds), (path if path not in ("", "-") else None)


class Statistics:
    """The counters sessions keep for --stats, and the lines that show them.

    counts: the sink's counters (begun, total, recipients, bytes,
    active; with shared=True also one per reply code, REPLY_NAMES);
    verifier: --verify's integrity.Verifier, or None; interval: seconds
    between lines (0: none); fd, path: the file lines are appended to (its
    descriptor, opened before privileges were dropped; -1: stdout, the
    writer where -c also writes, see smtpcore/output.py); msg: for
    warnings."""

    def __init__(self, counts, verifier, interval, fd, path, stdout, msg, shared=False):
        self.counts = counts
        self.lock = counts.lock
        self.verifier = verifier
        self.shared = shared                    # --procs: codes counted in counts too
        self.interval = interval or 0
        self.fd = fd
        self.out = output.LineWriter(fd, path, msg) if fd >= 0 else stdout
        self.replies = collections.Counter()    # b"250" -> how many
        self.sent = {}                          # what was sent -> how often
        self.started = self.last_time = time.monotonic()
        self.last = (0, 0, 0, 0)
        self.write_lock = threading.Lock()      # one line at a time, whole
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def add(self, name, amount=1):
        """Count sessions, recipients, bytes."""
        counts = self.counts
        with self.lock:
            setattr(counts, name, getattr(counts, name) + amount)

    def count_replies(self, data):
        """Count what one write sent; the codes are read out of it later
        (fold()), as the same few byte strings are sent again and again
        (with --procs at once, into the counters the processes share)."""
        with self.lock:
            if self.shared:
                counts = self.counts
                for code in REPLY_CODE.findall(data):
                    name = "r" + code.decode()
                    setattr(counts, name, getattr(counts, name) + 1)
                return
            sent = self.sent
            sent[data] = sent.get(data, 0) + 1
            if len(sent) > 1000:
                self._fold()

    def _fold(self):
        replies = self.replies
        for data, times in self.sent.items():
            for code in REPLY_CODE.findall(data):
                replies[code] += times
        self.sent = {}

    def reply_counts(self):
        """{"250": how many, ...} (with the lock held)."""
        if self.shared:
            counts = self.counts
            return {name[1:]: getattr(counts, name) for name in REPLY_NAMES
                    if getattr(counts, name)}
        self._fold()
        return {code.decode(): n for code, n in sorted(self.replies.items())}

    # ---- the interval timer and the SIGUSR1 listener

    def start(self, driver):
        """Run the interval timer and the SIGUSR1 listener on the engine's
        driver (the loop, or threads of their own)."""
        if self.interval > 0:
            ticker = engine.Waiter()
            ticker.steps = self._ticks()
            driver.start(ticker)
        listener = engine.Waiter()
        listener.fd = self.wake_r
        listener.steps = self._requests()
        driver.start(listener)

    def _ticks(self):
        due = time.monotonic() + self.interval
        while True:
            yield max(0.0, due - time.monotonic())
            self.write("interval")
            due += self.interval            # on the beat, without bursts after a stall
            if due <= time.monotonic():
                due = time.monotonic() + self.interval

    def _requests(self):
        while True:
            yield engine.READABLE
            try:
                while os.read(self.wake_r, 512):
                    pass
            except OSError:
                pass
            self.write("signal")

    def request(self):
        """Ask for a line soon; safe from a signal handler or another thread."""
        fd = self.wake_w
        if fd >= 0:
            try:
                os.write(fd, b"x")
            except OSError:
                pass

    # ---- the lines

    def line(self, event):
        counts, now = self.counts, time.monotonic()
        with self.lock:
            totals = (counts.begun, counts.total, counts.recipients, counts.bytes)
            active = counts.active
            replies = self.reply_counts()
            verify = None
            if self.verifier is not None:
                verify = {"runs": self.verifier.totals(), "unmarked": self.verifier.unmarked}
        span = now - self.last_time
        rates = {name: round((value - before) / span, 3) if span > 0 else 0.0
                 for name, value, before in zip(("sessions", "messages", "recipients", "bytes"),
                                                totals, self.last)}
        self.last, self.last_time = totals, now
        record = collections.OrderedDict([
            ("event", event), ("time", round(time.time(), 3)),
            ("uptime", round(now - self.started, 3)),
            ("sessions", totals[0]), ("active", active),
            ("messages", totals[1]), ("recipients", totals[2]), ("bytes", totals[3]),
            ("rates", rates), ("replies", replies)])
        if verify is not None:
            record["verify"] = verify
        return json.dumps(record) + "\n"

    def write(self, event):
        with self.write_lock:
            self.out.write(self.line(event).encode())

    def close(self):
        fd, self.wake_w = self.wake_w, -1       # a late SIGUSR1 writes nowhere
        if fd < 0:
            return
        os.close(fd)
        os.close(self.wake_r)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
