"""End-to-end integrity of test messages (smtp-source --integrity, smtp-sink
--verify): did every message arrive, once, intact?

The source puts one line in front of each message:

    X-Smtp-Integrity: run=<16 hex>; seq=<n>; count=<m>; sha256=<64 hex>

run    an id for the whole run (random; the same in all sessions/processes)
seq    the message's number in the run, 0 .. count-1, each used once
count  how many messages the run sends in all (so gaps can be found)
sha256 the digest of everything that follows this line in the message, as
       the source meant it: CRLF line ends, before dot-stuffing

The sink takes the message as it arrived (dot-unstuffed, CRLF kept), finds
the line at the very start, and checks the digest of the rest.  Per run it
counts ok, corrupt (the digest differs), duplicate (a seq seen before) and
missing (count minus the distinct seqs seen, when asked at the end).  A
MessageCheck does that as the octets stream in, in pieces of any size, so
that nothing of the message is kept (a message may be larger than memory).
"""

import hashlib
import os
import re
import threading

HEADER = b"X-Smtp-Integrity: "
_FORMAT = (b"X-Smtp-Integrity: run=%s; seq=%d; count=%d; sha256=%s\r\n")
_PARSE = re.compile(rb"X-Smtp-Integrity: run=([0-9a-f]{16}); seq=(\d+); count=(\d+); "
                    rb"sha256=([0-9a-f]{64})\r\n")


def new_run_id():
    return os.urandom(8).hex().encode()


def header(run_id, seq, count, rest):
    """The line to put in front of `rest` (the message, CRLF line ends)."""
    return _FORMAT % (run_id, seq, count, hashlib.sha256(rest).hexdigest().encode())


def parse(message):
    """(run, seq, count, digest, rest) if message starts with the line, else None."""
    if not message.startswith(HEADER):
        return None
    match = _PARSE.match(message)
    if match is None:
        return None
    run, seq, count, digest = match.groups()
    return run.decode(), int(seq), int(count), digest.decode(), message[match.end():]


def examine(message):
    """(run, seq, count, intact) of a marked message, else None."""
    found = parse(message)
    if found is None:
        return None
    run, seq, count, digest, rest = found
    return run, seq, count, hashlib.sha256(rest).hexdigest() == digest


MAX_LINE = 1000        # a longer first line is not the integrity line


class MessageCheck:
    """One message's integrity line and digest, computed as the octets
    arrive: feed() them in pieces of any size, then ask result().

    stuffed=True: the pieces are the DATA stream as received, up to and
    including the "." line that ends it; the dots are taken out here (one
    after each CRLF, RFC 5321 4.5.2, wherever the pieces split), and the
    "." line is not part of the message.  stuffed=False: the pieces are
    the message itself (BDAT chunks)."""

    def __init__(self, stuffed):
        self.stuffed = stuffed
        self.before = b"\r\n"       # the raw octets before the next piece
        self.held = b""             # the last two octets, until known not to
                                    # be the CRLF of the "." line
        self.head = b""             # the first line, until it is complete
        self.line = None            # its (run, seq, count, digest); False: none
        self.digest = None          # sha256 of what follows the line

    def feed(self, data):
        if self.stuffed:
            raw = data
            data = self.held + (self.before + data).replace(b"\r\n.", b"\r\n")[2:]
            self.before = (self.before + raw[-2:])[-2:]
            self.held, data = data[-2:], data[:-2]
        if self.digest is not None:
            self.digest.update(data)
        elif self.line is None:
            self._first_line(data)

    def _first_line(self, data):
        head = self.head + data
        end = head.find(b"\r\n", 0, MAX_LINE)
        if end < 0:
            if len(head) >= MAX_LINE or not HEADER.startswith(head[:len(HEADER)]):
                self.line, self.head = False, b""
            else:
                self.head = head
            return
        self.head = b""
        found = parse(head[:end + 2])
        if found is None:
            self.line = False
            return
        self.line = found[:4]
        self.digest = hashlib.sha256(head[end + 2:])

    def result(self):
        """(run, seq, count, intact) of a marked message, else None."""
        if not self.line:
            return None
        run, seq, count, digest = self.line
        return run, seq, count, self.digest.hexdigest() == digest


class RunCounts:
    """What the sink has seen of one run."""

    __slots__ = ("ok", "corrupt", "duplicate", "count", "seen")

    def __init__(self, count):
        self.ok = self.corrupt = self.duplicate = 0
        self.count = count
        self.seen = set()

    def missing(self):
        return max(0, self.count - len(self.seen))

    def as_dict(self):
        return {"ok": self.ok, "corrupt": self.corrupt, "duplicate": self.duplicate,
                "missing": self.missing(), "count": self.count}


class Verifier:
    """Checks messages as they complete; keeps counts per run id, updated
    under lock (sessions of several threads check messages at once; read
    totals() and unmarked with the lock held)."""

    def __init__(self, lock=None):
        self.lock = lock if lock is not None else threading.Lock()
        self.runs = {}
        self.unmarked = 0           # messages without the line

    def check(self, message):
        """Check one complete message (dot-unstuffed, CRLF line ends).
        Returns "ok", "corrupt", "duplicate" or None (not marked)."""
        return self.tally(examine(message))

    def tally(self, found):
        """Count what examine() or MessageCheck.result() found; returns as
        check() does."""
        if found is None:
            with self.lock:
                self.unmarked += 1
            return None
        return self.record(*found)

    def record(self, run, seq, count, intact):
        """Count a message examine()d here or in another process."""
        with self.lock:
            return self._record(run, seq, count, intact)

    def _record(self, run, seq, count, intact):
        counts = self.runs.get(run)
        if counts is None:
            counts = self.runs[run] = RunCounts(count)
        if seq in counts.seen:
            counts.duplicate += 1
            return "duplicate"
        counts.seen.add(seq)            # it arrived, intact or not
        if not intact:
            counts.corrupt += 1
            return "corrupt"
        counts.ok += 1
        return "ok"

    def totals(self):
        return {run: counts.as_dict() for run, counts in sorted(self.runs.items())}


class PipeVerifier:
    """--verify in a worker of smtp-sink --procs: checks the digest here,
    and tells the first process, which does the counting (collect()) --
    a duplicate may well arrive at another worker than the original.
    Whole lines, each in one write: atomic on a pipe."""

    def __init__(self, fd):
        self.fd = fd

    def tally(self, found):
        """What a MessageCheck found (see Verifier.tally)."""
        if found is None:
            os.write(self.fd, b"-\n")
            return None
        run, seq, count, intact = found
        os.write(self.fd, b"%s %d %d %d\n" % (run.encode(), seq, count, intact))
        return "ok" if intact else "corrupt"


def collect(fd, verifier):
    """Count what PipeVerifiers report on the pipe fd into verifier, until
    every writer has closed it (a thread of the first process)."""
    lines = os.fdopen(fd, "rb", buffering=1 << 16)
    for line in lines:
        fields = line.split()
        if len(fields) == 4:
            run, seq, count, intact = fields
            verifier.record(run.decode(), int(seq), int(count), intact == b"1")
        else:
            with verifier.lock:
                verifier.unmarked += 1
