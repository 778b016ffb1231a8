"""smtp-source --report and --stats: what a run did, how long each phase
took, and how that went during the run.

Every session keeps a Tally of its own: lists of latencies (nanoseconds)
per phase, the codes of the replies it read, its counts.  Now and then
(about every SAMPLE_BATCH samples in all) the session hands its tally to
the Report, under the report's lock: each list is sorted and counted into
the phase's Histogram (smtpcore/latency.py: in C but for a step per bucket
met), the codes into a Counter.  The hot path is thus one list append per
reply, in the session's own lists (no lock, whatever the engine), and the
memory is fixed: the histograms, the counters, and about SAMPLE_BATCH
samples.

The Report also merges the states of other processes' reports (--procs)
and of other runs' JSON reports (--merge-reports, smtpcore/reportfile.py),
histograms bucket by bucket, so that its percentiles are those of all the
values together, and writes itself as text, as JSON (schema 1, see the
REPORT section of smtp_source.py) or as a page (smtpcore/htmlreport.py).

With a timeline (--stats, or any --report) it also closes an interval
every so often (tick(), called by a timeline.Ticker, which takes every
tally's samples then): the samples go first to small histograms of the
interval running (latency.SparseHistogram), which become a --stats line
and a record of the report's timeline (smtpcore/timeline.py), and are
added to the run's histograms when the interval ends.
"""

import collections
import json
import math
import os
import signal
import socket
import threading
import time

from smtpcore.latency import SUB_BUCKETS, Histogram, SparseHistogram, bar_chart
from smtpcore.timeline import COUNTS, Interval, Timeline, ms, wall_clock

# The phases of a session (see REPORT in smtp_source.py).
PHASES = ("connect", "tls", "greeting", "helo", "starttls", "mail", "rcpt", "data",
          "bdat", "dot", "rset", "quit", "message", "response")
PHASE_NAMES = {"tls": "TLS", "helo": "HELO/EHLO", "starttls": "STARTTLS", "mail": "MAIL",
               "rcpt": "RCPT", "data": "DATA", "bdat": "BDAT", "dot": "end of data",
               "rset": "RSET", "quit": "QUIT"}
MESSAGE, RESPONSE = PHASES.index("message"), PHASES.index("response")
ERROR_KINDS = ("connect", "lost", "timeout", "tls", "rejected_greeting", "rejected_helo",
               "rejected_starttls", "rejected_mail", "rejected_rcpt", "rejected_data",
               "rejected_bdat", "rejected_dot", "rejected_rset")
SAMPLE_BATCH = 16384            # samples (about, of all sessions) between two flushes

monotonic_ns = time.monotonic_ns


class Report:
    """The figures of a run (or of one --procs worker), for all sessions.

    opts: the source's options (rate, recipients, lmtp, bdat, length,
    messages, sessions, and what workload() reads).  interval: seconds
    between two records of the timeline (None: no timeline).  Sessions
    get a tally() each; error() may be called from any session."""

    def __init__(self, opts, interval=None):
        self.opts = opts
        self.lock = threading.Lock()
        self.histograms = [Histogram() for _ in PHASES]    # (see settled())
        self.codes = collections.Counter()  # replies by code (0: none)
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.base = [0, 0, 0, 0]            # COUNTS merged from elsewhere
        self.elapsed = 0.0
        self.status = 0
        self.run_id = None                  # --integrity
        self.integrity_count = opts.messages
        self.rate = opts.rate
        self.held_signals = None            # --procs: see absorb()
        self.tallies = []
        # The samples one transaction makes, about: how often a session's
        # tally is handed over, so that all of them hold SAMPLE_BATCH.
        per_message = opts.recipients * (2 if opts.lmtp else 1) + 6
        if opts.bdat:
            per_message += (opts.length or 1000) // opts.bdat
        self.flush_every = max(8, SAMPLE_BATCH // per_message // max(1, opts.sessions))
        # Which run this is (see as_dict): set by begin() and the caller.
        self.id = os.urandom(8).hex()
        self.host = socket.gethostname()
        self.command = None                 # the command line (a list)
        self.settings = workload(opts)
        self.sources = None                 # merged reports: theirs
        self.start_ns = 0
        self.started = self.ended = None    # wall clock (ended: merged reports)
        # The timeline: the histograms of the interval running now (the
        # samples go there first, and into self.histograms at its end).
        self.timeline = Timeline(interval) if interval else None
        self.interval_ns = int(interval * 1e9) if interval else 0
        self.current = [None] * len(PHASES) if interval else None
        self.last_ns = 0
        self.marks = ([0] * len(COUNTS), dict(self.errors))    # at the last tick

    def begin(self, start_ns):
        """The run starts at start_ns (monotonic): the zero of its timeline."""
        self.start_ns = self.last_ns = start_ns
        self.started = wall_clock(start_ns)

    def tally(self):
        """A new session's own tally."""
        tally = Tally(self)
        with self.lock:
            self.tallies.append(tally)
        return tally

    def error(self, kind):
        with self.lock:
            self.errors[kind] += 1

    def absorb(self, tally):
        """Count a tally's samples and codes (taking them out of it).  The
        session may append to its lists meanwhile (a ticker absorbs every
        tally): what is taken is copied, then deleted, each in one step.
        With --procs (held_signals) a SIGTERM waits until it is done, so
        that a worker's figures are never half counted."""
        held = self.held_signals
        if held:
            signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            with self.lock:
                histograms = self.histograms if self.current is None else self.current
                for index, samples in enumerate(tally.samples):
                    if samples:
                        taken = len(samples)
                        batch = samples[:taken]
                        del samples[:taken]
                        batch.sort()
                        if histograms[index] is None:
                            histograms[index] = SparseHistogram()
                        histograms[index].add_sorted(batch)
                codes = tally.codes
                taken = len(codes)
                self.codes.update(codes[:taken])
                del codes[:taken]
        finally:
            if held:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, held)

    def flush(self):
        """Count what every session's tally holds."""
        with self.lock:
            tallies = list(self.tallies)
        for tally in tallies:
            self.absorb(tally)

    def settled(self):
        """The histograms of the whole run so far (PHASES order): those
        of the intervals closed, with the one running now."""
        self.flush()
        with self.lock:
            if not any(self.current or ()):
                return list(self.histograms)
            whole = []
            for closed, running in zip(self.histograms, self.current):
                if running is not None:
                    closed = Histogram.from_state(closed.state())
                    closed.merge(running.state())
                whole.append(closed)
            return whole

    def totals(self):
        """[sessions, messages, recipients, bytes] so far (the sessions
        count theirs, never reset: only they write them)."""
        totals = list(self.base)
        with self.lock:
            tallies = list(self.tallies)
        for tally in tallies:
            totals[0] += tally.sessions
            totals[1] += tally.messages
            totals[2] += tally.recipients
            totals[3] += tally.bytes
        return totals

    # ---- the timeline

    def tick(self, now_ns, slot, active=0):
        """Close the interval that ends at now_ns (monotonic; slot: its
        number on the grid of the run): its timeline.Interval, whose
        summary goes to the timeline."""
        self.flush()
        totals = self.totals()
        with self.lock:
            current, self.current = self.current, [None] * len(PHASES)
            for closed, running in zip(self.histograms, current):
                if running is not None:
                    closed.merge(running.state())
            errors = dict(self.errors)
            replies = {"%03d" % code: count for code, count in sorted(self.codes.items())}
        before, errors_before = self.marks
        self.marks = (totals, errors)
        counts = collections.OrderedDict(
            (name, now - was) for name, now, was in zip(COUNTS, totals, before))
        histograms = collections.OrderedDict(
            (phase, hist) for phase, hist in zip(PHASES, current) if hist is not None)
        so_far = dict(zip(COUNTS, totals), errors=errors, replies=replies, active=active)
        interval = Interval(slot, (self.last_ns - self.start_ns) / 1e9,
                            (now_ns - self.last_ns) / 1e9, counts,
                            {kind: errors[kind] - errors_before[kind] for kind in ERROR_KINDS},
                            histograms, so_far)
        self.last_ns = now_ns
        self.timeline.append(interval.summary())
        return interval

    def last_tick(self, now_ns):
        """The last interval, at the end of the run."""
        slot = max(1, math.ceil((now_ns - self.start_ns) / self.interval_ns))
        return self.tick(now_ns, slot)

    # ---- other processes' and other runs' figures

    def state(self):
        """What merge() needs, plain data (pickled by a --procs worker;
        reportfile.state() makes the same of a JSON report)."""
        histograms = self.settled()
        totals = self.totals()
        return {"histograms": [h.state() for h in histograms],
                "codes": dict(self.codes), "errors": dict(self.errors), "totals": totals,
                "timeline": None if self.timeline is None else
                (self.timeline.interval, self.timeline.records)}

    def merge(self, state, offset=0.0):
        """Add another state(): the histograms bucket by bucket, so that
        the percentiles are those of all the values together; its timeline
        (which starts offset seconds after this one's) record by record."""
        for histogram, other in zip(self.histograms, state["histograms"]):
            histogram.merge(other)
        self.codes.update(state["codes"])
        for kind, count in state["errors"].items():
            self.errors[kind] += count
        self.base = [mine + theirs for mine, theirs in zip(self.base, state["totals"])]
        if state["timeline"] is not None:
            interval, records = state["timeline"]
            if self.timeline is None:
                self.timeline = Timeline(interval)
            self.timeline.merge(interval, records, offset)

    # ---- output

    def as_dict(self):
        """The JSON report (see REPORT in the manual); keys always the same."""
        histograms = dict(zip(PHASES, self.settled()))
        sessions, messages, recipients, size = self.totals()
        elapsed = self.elapsed

        def per_second(value):
            return round(value / elapsed, 3) if elapsed > 0 else None

        latency, states = {}, {}
        for phase in PHASES:
            hist = histograms[phase]
            p50, p90, p99 = hist.percentiles((0.50, 0.90, 0.99))
            latency[phase] = {"count": hist.count, "min": ms(hist.min), "p50": ms(p50),
                              "p90": ms(p90), "p99": ms(p99), "max": ms(hist.max)}
            used, _, _ = hist.state()
            states[phase] = collections.OrderedDict((
                ("count", hist.count), ("min", hist.min), ("max", hist.max),
                ("buckets", [list(pair) for pair in used])))
        started = None if self.started is None else round(self.started, 6)
        ended = self.ended
        if ended is None and started is not None:
            ended = round(self.started + elapsed, 6)
        sources = self.sources
        if sources is None:
            sources = [collections.OrderedDict((
                ("id", self.run_id.decode() if self.run_id else self.id),
                ("host", self.host), ("command", self.command), ("started", started),
                ("ended", ended), ("status", self.status), ("messages", messages)))]
        return collections.OrderedDict((
            ("schema", 1),
            ("status", self.status),
            ("elapsed", round(elapsed, 6)),
            ("sessions", sessions),
            ("messages", messages),
            ("messages_sent", histograms["message"].count),
            ("recipients", recipients),
            ("bytes", size),
            ("messages_per_second", per_second(messages)),
            ("recipients_per_second", per_second(recipients)),
            ("mb_per_second", per_second(size / 1e6)),
            ("rate", self.rate),
            ("latency_ms", latency),
            ("replies", {"%03d" % code: count for code, count in sorted(self.codes.items())}),
            ("errors", dict(self.errors)),
            ("integrity", None if self.run_id is None else
             {"run": self.run_id.decode(), "count": self.integrity_count}),
            # Added within schema 1 (new keys come last): what merging needs.
            ("started", started),
            ("ended", ended),
            ("settings", self.settings),
            ("sources", sources),
            ("histograms", collections.OrderedDict((
                ("unit", "ns"), ("sub_buckets", SUB_BUCKETS), ("phases", states)))),
            ("timeline", None if self.timeline is None else self.timeline.as_dict()),
        ))

    def json(self):
        return dumps(self.as_dict())

    def text(self):
        """The report as a person reads it in a terminal."""
        data = self.as_dict()
        elapsed = data["elapsed"]
        lines = ["smtp-source report: %d messages in %.3f s%s" % (
            data["messages"], elapsed, "" if not data["status"] else " (ended by a fatal error)")]
        if len(data["sources"]) > 1:
            lines.append("  merged from %d reports (%s)" % (
                len(data["sources"]), ", ".join(source["host"] for source in data["sources"])))
        rate = lambda key: "" if data[key] is None else "%12.1f /s" % data[key]
        lines.append("  sessions    %10d" % data["sessions"])
        lines.append("  messages    %10d %s   (sent %d)" % (
            data["messages"], rate("messages_per_second"), data["messages_sent"]))
        lines.append("  recipients  %10d %s" % (data["recipients"], rate("recipients_per_second")))
        lines.append("  bytes       %10d %s" % (data["bytes"], "" if data["mb_per_second"] is None
                                               else "%12.3f MB/s" % data["mb_per_second"]))
        if data["rate"] is not None:
            lines.append("  target rate %14.1f /s" % data["rate"])
        if data["integrity"] is not None:
            lines.append("  integrity   run=%s count=%d" % (data["integrity"]["run"],
                                                           data["integrity"]["count"]))
        lines.append("")
        lines.append("  %-12s %8s %10s %10s %10s %10s %10s" % (
            "latency (ms)", "count", "min", "p50", "p90", "p99", "max"))
        for phase in PHASES:
            row = data["latency_ms"][phase]
            if row["count"]:
                lines.append("  %-12s %8d %10.3f %10.3f %10.3f %10.3f %10.3f" % (
                    PHASE_NAMES.get(phase, phase), row["count"], row["min"], row["p50"],
                    row["p90"], row["p99"], row["max"]))
        histograms = dict(zip(PHASES, self.settled()))
        for phase, title in (("message", "message latency (MAIL to end-of-data reply)"),
                             ("response", "response time (from when each message was due)")):
            chart = bar_chart(histograms[phase].octaves())
            if chart:
                lines += ["", "  %s:" % title] + ["  " + line for line in chart]
        lines.append("")
        lines.append("  replies: " + (", ".join("%s x%d" % item for item in
                                               data["replies"].items()) or "none"))
        errors = ["%s x%d" % (kind, count) for kind, count in data["errors"].items() if count]
        lines.append("  errors:  " + (", ".join(errors) or "none"))
        return "\n".join(lines) + "\n"


def workload(opts):
    """The settings that shape each transaction, and so what a latency
    means: reports merge only when these are the same (reportfile.py).
    What only paces a run (-s, -m, -w, -R, --rate's value, --procs) or
    names things (-f, -t, -M, -S) may differ from one report to another."""
    return collections.OrderedDict((
        ("protocol", "LMTP" if opts.lmtp else "SMTP"),              # -L
        ("recipients", opts.recipients),                            # -r
        ("reuse", not opts.disconnect),                             # -d
        ("length", opts.length or None),                            # -l
        ("file_bytes", len(opts.file_data) if opts.file is not None else None),   # -F
        ("old", not opts.send_helo),                                # -o
        ("ehlo", opts.ehlo),
        ("pipelining", opts.pipelining),
        ("tls", "implicit" if opts.tls else "starttls" if opts.starttls else None),
        ("bdat", opts.bdat or None),
        ("size", opts.size),
        ("open_loop", opts.rate is not None),                       # --rate: "response"
    ))


def dumps(data):
    """A report as JSON text: indented, but a source, a phase's histogram
    and a timeline record a line each."""
    data = collections.OrderedDict(data)
    heavy = [(key, data.pop(key)) for key in ("sources", "histograms", "timeline")]
    text = json.dumps(data, indent=2)[:-2]          # without the closing "\n}"
    for key, value in heavy:
        if key == "sources":
            text += ',\n  "sources": [\n%s]' % ",\n".join(
                "    " + json.dumps(source) for source in value)
        elif key == "histograms":
            inner = collections.OrderedDict(value)
            phases = inner.pop("phases")
            head = json.dumps(inner)[:-1]
            body = ",\n".join("    %s: %s" % (json.dumps(phase), json.dumps(row))
                              for phase, row in phases.items())
            text += ',\n  "histograms": %s, "phases": {\n%s}}' % (head, body)
        elif value is None:
            text += ',\n  "timeline": null'
        else:
            body = ",\n".join("    " + json.dumps(record) for record in value["records"])
            text += ',\n  "timeline": {"interval": %s, "records": [\n%s]}' % (
                json.dumps(value["interval"]), body)
    return text + "\n}\n"


class Tally:
    """One session's figures: its samples and reply codes since the Report
    last took them, its counts since it began (only the session writes
    them, without a lock; the Report reads them)."""

    __slots__ = ("report", "samples", "appenders", "codes", "sessions", "messages",
                 "recipients", "bytes")

    def __init__(self, report):
        self.report = report
        self.samples = [[] for _ in PHASES]
        self.appenders = [samples.append for samples in self.samples]
        self.codes = []                     # a reply code each
        self.sessions = self.messages = self.recipients = self.bytes = 0

    def transaction_done(self, started, delivered, size, due):
        """After each transaction begun at started (monotonic ns): time the
        message (from MAIL; with --rate, due, also from when it was due),
        count it (size: its bytes sent, 0 when it was not sent)."""
        if size:
            ended = monotonic_ns()              # just after the end-of-data reply
            messages = self.samples[MESSAGE]
            messages.append(ended - started)
            if due is not None:
                self.samples[RESPONSE].append(ended - due)
            self.bytes += size
            if len(messages) >= self.report.flush_every:
                self.report.absorb(self)
        if delivered:
            self.messages += 1
            self.recipients += delivered
