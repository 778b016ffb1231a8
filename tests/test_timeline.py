"""smtpcore.timeline and Report.tick: intervals closed while sessions add
to their tallies (nothing lost, nothing counted twice), --stats lines
with smtp-sink's keys, timelines put on one grid, long timelines made
shorter.  Without sockets."""

import json
import random
import sys
import threading
import unittest

from smtpcore import timeline
from smtpcore.report import PHASES, Report
from tests.test_latency import exact, histogram_of
from tests.test_reportfile import options

SECOND = 10 ** 9
SINK_FIELDS = ["event", "time", "uptime", "sessions", "active", "messages", "recipients",
               "bytes", "rates", "replies"]         # smtp-sink --stats (test_sink_stats)
MESSAGE = PHASES.index("message")


def ticking_report(interval=1.0):
    report = Report(options(), interval)
    report.begin(10 ** 12)
    return report


class TickTests(unittest.TestCase):

    def test_intervals_and_lines(self):
        report = ticking_report()
        tally = report.tally()
        for value in (1000, 2000, 3000):
            tally.appenders[MESSAGE](value)
        tally.messages, tally.sessions = 3, 1
        tally.codes.extend([220, 250, 250])
        report.error("rejected_rcpt")
        first = report.tick(report.start_ns + SECOND, 1, active=1)
        tally.appenders[MESSAGE](5000)
        tally.messages = 4
        last = report.last_tick(report.start_ns + SECOND + SECOND // 2)
        self.assertEqual((last.slot, last.start, last.seconds), (2, 1.0, 0.5))
        line = json.loads(first.line("interval", 1000.0))
        self.assertEqual(list(line)[:len(SINK_FIELDS)], SINK_FIELDS)
        self.assertEqual(list(line)[len(SINK_FIELDS):], ["errors", "interval"])
        self.assertEqual((line["time"], line["uptime"], line["messages"], line["active"]),
                         (1001.0, 1.0, 3, 1))
        self.assertEqual(line["rates"], {"sessions": 1.0, "messages": 3.0, "recipients": 0.0,
                                         "bytes": 0.0})
        self.assertEqual(line["replies"], {"220": 1, "250": 2})
        self.assertEqual(line["errors"]["rejected_rcpt"], 1)
        self.assertEqual(line["interval"], {
            "seconds": 1.0, "sessions": 1, "messages": 3, "recipients": 0, "bytes": 0,
            "errors": {"rejected_rcpt": 1},
            "latency_ms": {"message": {"count": 3, "p50": 0.002, "p99": 0.003, "max": 0.003}}})
        line = json.loads(last.line("exit", 1000.0))
        self.assertEqual((line["event"], line["messages"], line["interval"]["messages"],
                          line["interval"]["errors"], line["rates"]["messages"]),
                         ("exit", 4, 1, {}, 2.0))
        records = report.timeline.records
        self.assertEqual([(r["start"], r["seconds"], r["messages"], r["errors"])
                          for r in records], [(0.0, 1.0, 3, 1), (1.0, 0.5, 1, 0)])
        self.assertEqual(records[0]["latency_ms"]["message"]["sketch"],
                         histogram_of([1000, 2000, 3000]).sketch())

    def test_ticks_while_sessions_add(self):
        # Threads engine: a ticker takes every tally's samples while the
        # sessions append to them.  Every sample and message is counted
        # once: in the whole run, and in exactly one interval.
        report = ticking_report(0.001)
        sessions, per_session = 4, 20000
        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)         # threads take turns as often as can be
        self.addCleanup(sys.setswitchinterval, switch)
        tallies = [report.tally() for _ in range(sessions)]
        go, ticked = threading.Event(), threading.Event()

        def session(tally):
            append = tally.appenders[MESSAGE]
            go.wait(10)
            for value in range(1, per_session + 1):
                append(value)
                tally.messages += 1
                if value % 3000 == 0:
                    report.absorb(tally)        # as transaction_done does now and then
                if value == per_session // 2:   # half way: not before some ticks
                    ticked.wait(10)             # (a busy machine may hold the ticker back)
        threads = [threading.Thread(target=session, args=(tally,)) for tally in tallies]
        for thread in threads:
            thread.start()
        go.set()
        intervals, slot = [], 0
        while any(thread.is_alive() for thread in threads):
            slot += 1
            intervals.append(report.tick(report.start_ns + slot * SECOND // 1000, slot))
            if slot == 3:
                ticked.set()
        for thread in threads:
            thread.join(10)
        intervals.append(report.last_tick(report.start_ns + (slot + 1) * SECOND // 1000))
        total = sessions * per_session
        self.assertGreater(len(intervals), 2)
        self.assertEqual(sum(interval.counts["messages"] for interval in intervals), total)
        self.assertEqual(sum(interval.histograms["message"].count for interval in intervals
                             if "message" in interval.histograms), total)
        self.assertEqual(report.settled()[MESSAGE].count, total)
        self.assertEqual(report.totals()[1], total)


class RebinTests(unittest.TestCase):

    def record(self, start, values, seconds=1.0, messages=None):
        interval = timeline.Interval(1, start, seconds, {
            "sessions": 0, "messages": len(values) if messages is None else messages,
            "recipients": 0, "bytes": 0}, {"lost": 1},
            {"message": histogram_of(values)} if values else {}, {})
        return interval.summary()

    def test_two_reports_on_one_grid(self):
        rng = random.Random(1)
        fast = [[rng.randint(10 ** 5, 10 ** 6) for _ in range(300)] for _ in range(3)]
        slow = [[rng.randint(10 ** 7, 10 ** 8) for _ in range(100)] for _ in range(3)]
        one = [self.record(k, fast[k]) for k in range(3)]
        other = [self.record(k, slow[k]) for k in range(3)]
        merged = timeline.rebin([(0.0, one), (0.004, other)], 1.0)    # started 4 ms later
        self.assertEqual([(r["start"], r["seconds"], r["messages"], r["errors"])
                          for r in merged], [(0.0, 1.0, 400, 2), (1.0, 1.0, 400, 2),
                                             (2.0, 1.0, 400, 2)])
        for k, record in enumerate(merged):
            values = fast[k] + slow[k]
            row = record["latency_ms"]["message"]
            self.assertEqual((row["count"], row["max"]), (400, round(max(values) / 1e6, 3)))
            for key, fraction in (("p50", 0.5), ("p99", 0.99)):
                true = exact(values, fraction) / 1e6
                self.assertLessEqual(abs(row[key] - true), true / 16 + 0.001, (k, key))

    def test_a_long_timeline_gets_coarser(self):
        line = timeline.Timeline(1.0)
        for k in range(timeline.MAX_RECORDS + 1):
            line.append(self.record(k, [1000 + k] if k % 2 else [], messages=1))
        self.assertEqual(line.interval, 2.0)
        self.assertEqual(len(line.records), (timeline.MAX_RECORDS + 2) // 2)
        self.assertEqual(sum(r["messages"] for r in line.records), timeline.MAX_RECORDS + 1)
        self.assertEqual(sum(r["latency_ms"]["message"]["count"] for r in line.records
                             if r["latency_ms"]), timeline.MAX_RECORDS // 2)
        self.assertEqual([r["start"] for r in line.records[:3]], [0.0, 2.0, 4.0])


if __name__ == "__main__":
    unittest.main()
