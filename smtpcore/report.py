"""smtp-source --report: what a run did, and how long each phase took.

Every session keeps a Tally of its own: lists of latencies (nanoseconds)
per phase, the codes of the replies it read, its counts.  Now and then
(about every SAMPLE_BATCH samples in all) the session hands its tally to
the Report, under the report's lock: each list is sorted and counted into
the phase's Histogram (smtpcore/latency.py: in C but for a step per bucket
met), the codes into a Counter.  The hot path is thus one list append per
reply, in the session's own lists (no lock, whatever the engine), and the
memory is fixed: the histograms, the counters, and about SAMPLE_BATCH
samples.

The Report also merges the states of other processes' reports (--procs),
histograms bucket by bucket, so that its percentiles are those of all the
values together, and writes itself as text or as JSON (schema 1, see the
REPORT section of smtp_source.py).
"""

import collections
import json
import signal
import threading
import time

from smtpcore.latency import Histogram, bar_chart

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
    messages, report, sessions).  Sessions get a tally() each; error() and
    record() may be called from any session."""

    def __init__(self, opts):
        self.opts = opts
        self.lock = threading.Lock()
        self.histograms = [Histogram() for _ in PHASES]
        self.phases = dict(zip(PHASES, self.histograms))
        self.codes = collections.Counter()  # replies by code (0: none)
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.sessions = 0
        self.messages = 0
        self.recipients = 0
        self.bytes = 0
        self.elapsed = 0.0
        self.status = 0
        self.run_id = None
        self.held_signals = None            # --procs: see flush()
        self.tallies = []
        # The samples one transaction makes, about: how often a session's
        # tally is handed over, so that all of them hold SAMPLE_BATCH.
        per_message = opts.recipients * (2 if opts.lmtp else 1) + 6
        if opts.bdat:
            per_message += (opts.length or 1000) // opts.bdat
        self.flush_every = max(8, SAMPLE_BATCH // per_message // max(1, opts.sessions))

    def tally(self):
        """A new session's own tally."""
        tally = Tally(self)
        with self.lock:
            self.tallies.append(tally)
        return tally

    def error(self, kind):
        with self.lock:
            self.errors[kind] += 1

    def record(self, phase, elapsed_ns):
        with self.lock:
            self.phases[phase].record(elapsed_ns)

    def absorb(self, tally):
        """Count a tally's samples, codes and counts (and empty it).  With
        --procs (held_signals) a SIGTERM waits until it is done, so that a
        worker's figures are never half counted."""
        held = self.held_signals
        if held:
            signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            with self.lock:
                for histogram, samples in zip(self.histograms, tally.samples):
                    if samples:
                        samples.sort()          # in place: no copy to allocate
                        histogram.add_sorted(samples)
                        samples.clear()         # (the session appends to them)
                self.codes.update(tally.codes)
                tally.codes.clear()
                self.sessions += tally.sessions
                self.messages += tally.messages
                self.recipients += tally.recipients
                self.bytes += tally.bytes
                tally.sessions = tally.messages = tally.recipients = tally.bytes = 0
        finally:
            if held:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, held)

    def flush(self):
        """Count what every session's tally holds (at the end of the run)."""
        with self.lock:
            tallies = list(self.tallies)
        for tally in tallies:
            self.absorb(tally)

    # ---- --procs: a worker's figures, merged into the first process's report

    def state(self):
        """What merge() needs, plain data (pickled by the worker)."""
        self.flush()
        return {"histograms": [h.state() for h in self.histograms],
                "codes": dict(self.codes), "errors": self.errors,
                "totals": [self.sessions, self.messages, self.recipients, self.bytes]}

    def merge(self, state):
        """Add a worker's state(): the histograms bucket by bucket, so that
        the percentiles are those of all the values together."""
        for histogram, other in zip(self.histograms, state["histograms"]):
            histogram.merge(other)
        self.codes.update(state["codes"])
        for kind, count in state["errors"].items():
            self.errors[kind] += count
        sessions, messages, recipients, size = state["totals"]
        self.sessions += sessions
        self.messages += messages
        self.recipients += recipients
        self.bytes += size

    # ---- output

    def as_dict(self):
        """The JSON report (see REPORT in the manual); keys always the same."""
        self.flush()
        elapsed = self.elapsed

        def per_second(value):
            return round(value / elapsed, 3) if elapsed > 0 else None

        def ms(value):
            return None if value is None else round(value / 1e6, 3)

        latency = {}
        for phase in PHASES:
            hist = self.phases[phase]
            p50, p90, p99 = hist.percentiles((0.50, 0.90, 0.99))
            latency[phase] = {"count": hist.count, "min": ms(hist.min), "p50": ms(p50),
                              "p90": ms(p90), "p99": ms(p99), "max": ms(hist.max)}
        return collections.OrderedDict((
            ("schema", 1),
            ("status", self.status),
            ("elapsed", round(elapsed, 6)),
            ("sessions", self.sessions),
            ("messages", self.messages),
            ("messages_sent", self.phases["message"].count),
            ("recipients", self.recipients),
            ("bytes", self.bytes),
            ("messages_per_second", per_second(self.messages)),
            ("recipients_per_second", per_second(self.recipients)),
            ("mb_per_second", per_second(self.bytes / 1e6)),
            ("rate", self.opts.rate),
            ("latency_ms", latency),
            ("replies", {"%03d" % code: count for code, count in sorted(self.codes.items())}),
            ("errors", dict(self.errors)),
            ("integrity", None if self.run_id is None else
             {"run": self.run_id.decode(), "count": self.opts.messages}),
        ))

    def json(self):
        return json.dumps(self.as_dict(), indent=2) + "\n"

    def text(self):
        """The report as a person reads it in a terminal."""
        data = self.as_dict()
        elapsed = data["elapsed"]
        lines = ["smtp-source report: %d messages in %.3f s%s" % (
            data["messages"], elapsed, "" if not data["status"] else " (ended by a fatal error)")]
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
        for phase, title in (("message", "message latency (MAIL to end-of-data reply)"),
                             ("response", "response time (from when each message was due)")):
            chart = bar_chart(self.phases[phase].octaves())
            if chart:
                lines += ["", "  %s:" % title] + ["  " + line for line in chart]
        lines.append("")
        lines.append("  replies: " + (", ".join("%s x%d" % item for item in
                                               data["replies"].items()) or "none"))
        errors = ["%s x%d" % (kind, count) for kind, count in data["errors"].items() if count]
        lines.append("  errors:  " + (", ".join(errors) or "none"))
        return "\n".join(lines) + "\n"


class Tally:
    """One session's figures since they were last handed to the Report:
    only that session's thread touches them (no lock)."""

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
