"""smtp_source.py past one host, over real sockets: three sources started
by GNU parallel with --start-at against one sink and merged into one
report (--merge-reports); what --start-at waits for; --stats lines (one
process, and --procs); the HTML page of a real run; and --merge-reports
on the command line, with the reports it refuses."""

import json
import os
import shlex
import subprocess
import sys
import time
import unittest

import smtp_source
from smtpcore import latency
from smtpcore.latency import Histogram
from tests import support
from tests.fake_smtp import OURS, FakeServer, run_tool, seq
from tests.test_htmlreport import checked_text
from tests.test_reportfile import make_report, options
from tests.test_timeline import SINK_FIELDS

M = ["-M", "client.example"]


def json_lines(data):
    return [json.loads(line) for line in data.decode().splitlines()]


def merge_command(*args):
    """--merge-reports runs no session: no engine option."""
    return [sys.executable, support.SOURCE, "--merge-reports"] + list(args)


def histogram_of_every_sample(reports, phase):
    """One Histogram fed every sample of the reports' phase: each sample
    is in its bucket, the smallest and the largest are known exactly."""
    hist = Histogram()
    for data in reports:
        state = data["histograms"]["phases"][phase]
        if not state["count"]:
            continue
        extremes = [state["min"], state["max"]]
        for index, count in state["buckets"]:
            low, high = latency.bucket_range(index)
            for _ in range(count):
                exact = [v for v in extremes if low <= v <= high][:1]
                # (the others: in their bucket, and never beyond the extremes)
                hist.record(exact[0] if exact else min(max(low, state["min"]), state["max"]))
                if exact:
                    extremes.remove(exact[0])
    return hist


class MultiHostTest(support.BothEngines, unittest.TestCase):

    def test_three_sources_under_gnu_parallel_make_one_report(self):
        parallel = support.need_program("parallel")
        sink = support.InProcessSink(self, ["--verify", "--stats=0"])
        directory = support.temp_dir(self)
        start = time.time() + 4             # (three Pythons start on a busy machine)
        source = support.tool_cmd(
            support.SOURCE, "--start-at=%.3f" % start, "-s", "2", "-m", "{}", "-d",
            "--integrity", "-M", "host{#}.example",
            "--report=json:" + os.path.join(directory, "host{#}.json"),
            "%s:%d" % sink.address)
        result = support.run([parallel, "--will-cite", "--jobs", "3", "--halt", "now,fail=1",
                              " ".join(shlex.quote(arg) for arg in source),
                              ":::", "30", "40", "50"], timeout=60)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        names = [os.path.join(directory, "host%d.json" % n) for n in (1, 2, 3)]
        reports = []
        for name in names:
            with open(name) as handle:
                reports.append(json.load(handle))
        self.assertEqual(sorted(data["messages"] for data in reports), [30, 40, 50])
        # They began together, at the moment given.
        starts = [data["started"] for data in reports]
        self.assertGreaterEqual(min(starts), start - 0.001)
        self.assertLess(max(starts) - min(starts), 1.0)

        merged = support.run(merge_command("--report=json", *names))
        self.assertEqual((merged.returncode, merged.stderr), (0, b""))
        data = json.loads(merged.stdout)
        for key in ("sessions", "messages", "messages_sent", "recipients", "bytes"):
            self.assertEqual(data[key], sum(report[key] for report in reports), key)
        self.assertEqual(data["messages"], 120)
        for code in ("220", "250", "354", "221"):
            self.assertEqual(data["replies"][code],
                             sum(report["replies"][code] for report in reports))
        for phase in ("mail", "rcpt", "dot", "message", "connect"):
            hist = histogram_of_every_sample(reports, phase)
            row = data["latency_ms"][phase]
            self.assertEqual(row["count"], hist.count, phase)
            self.assertEqual([row[key] for key in ("min", "p50", "p90", "p99", "max")],
                             [round(value / 1e6, 3) for value in
                              [hist.min] + hist.percentiles((0.5, 0.9, 0.99)) + [hist.max]],
                             phase)
        self.assertEqual(data["elapsed"], round(max(r["ended"] for r in reports) - min(starts), 6))
        # Three runs, each with its own id, and the sink counted them all.
        runs = [report["integrity"]["run"] for report in reports]
        self.assertEqual(len(set(runs)), 3)
        self.assertEqual(sorted(source["id"] for source in data["sources"]), sorted(runs))
        self.assertIsNone(data["integrity"])
        sink.stop()
        [line] = [line for line in json_lines(sink.stdout()) if line["event"] == "exit"]
        self.assertEqual(line["messages"], 120)
        self.assertEqual(line["verify"]["runs"], {
            report["integrity"]["run"]: {"ok": report["messages"], "corrupt": 0, "duplicate": 0,
                                         "missing": 0, "count": report["messages"]}
            for report in reports})

    def test_start_at_waits_and_the_rate_counts_from_then(self):
        server = FakeServer().start(self)
        target = time.time() + 2
        wall, mono = time.time(), time.monotonic()
        moment = mono + (target - wall)             # the target on the server's clock
        result = run_tool(OURS, M + ["--start-at=%.6f" % target, "--rate=20/s", "-m", "4",
                                     "-d", "--report=json", "TARGET"], server)
        self.assertEqual((result.rc, result.stderr), (0, b""))
        [conn] = result.connections
        self.assertGreaterEqual(conn.times[0], moment)     # the greeting: after accept()
        mails = [t for (kind, data), t in zip(conn.events, conn.times)
                 if kind == "C" and data.startswith(b"MAIL")]
        for k, when in enumerate(mails):
            self.assertGreaterEqual(when, moment + k / 20, k)
        data = json.loads(result.stdout)
        self.assertGreaterEqual(data["started"], target - 0.001)
        self.assertEqual(data["latency_ms"]["response"]["count"], 4)

    def test_stats_lines_of_a_five_second_run(self):
        # 100 messages at 20 a second: due from 0 to 4.95 s.
        server = FakeServer().start(self)
        result = run_tool(OURS, M + ["--stats=1", "--rate=20/s", "-m", "100", "-d",
                                     "--report=json", "TARGET"], server, timeout=40)
        self.assertEqual(result.rc, 0, result.stderr)
        lines = json_lines(result.stderr)
        self.assertIn(len(lines), (4, 5, 6))
        self.assertEqual([line["event"] for line in lines],
                         ["interval"] * (len(lines) - 1) + ["exit"])
        self.assertEqual(sum(line["interval"]["messages"] for line in lines), 100)
        self.assertEqual(lines[-1]["messages"], 100)
        self.assertEqual(json.loads(result.stdout)["messages"], 100)
        for line in lines:
            self.assertEqual(list(line)[:len(SINK_FIELDS)], SINK_FIELDS)
        for line in lines[1:-1]:
            self.assertAlmostEqual(line["rates"]["messages"], 20, delta=4)
            row = line["interval"]["latency_ms"]["message"]
            self.assertEqual(row["count"], line["interval"]["messages"])
            self.assertLessEqual(row["p50"], row["p99"])
            self.assertLessEqual(row["p99"], row["max"])
        self.assertEqual(lines[-1]["active"], 0)
        self.assertEqual(lines[-1]["replies"], {"220": 1, "221": 1, "250": 301, "354": 100})

    def test_stats_to_a_file_and_of_a_group(self):
        path = os.path.join(support.temp_dir(self), "stats.jsonl")
        server = FakeServer().start(self)
        result = run_tool(OURS, M + ["--stats=0," + path, "-m", "3", "TARGET"], server)
        self.assertEqual((result.rc, result.stderr, result.stdout), (0, b"", b""))
        with open(path, "rb") as handle:
            [line] = json_lines(handle.read())
        self.assertEqual((line["event"], line["sessions"], line["messages"]), ("exit", 3, 3))
        # --procs: the lines of both workers as one.
        result = run_tool(OURS, M + ["--procs=2", "-s", "4", "-m", "400", "-d", "--rate=400",
                                     "--stats=0.25", "--report=json", "TARGET"], server)
        self.assertEqual(result.rc, 0, result.stderr)
        lines = json_lines(result.stderr)
        self.assertEqual([line["event"] for line in lines],
                         ["interval"] * (len(lines) - 1) + ["exit"])
        self.assertGreaterEqual(len(lines), 3)
        self.assertEqual(sum(line["interval"]["messages"] for line in lines), 400)
        self.assertEqual((lines[-1]["messages"], lines[-1]["sessions"]), (400, 4))
        self.assertEqual([line["messages"] for line in lines],
                         sorted(line["messages"] for line in lines))
        report = json.loads(result.stdout)
        self.assertEqual(sum(r["messages"] for r in report["timeline"]["records"]), 400)

    def test_the_page_of_a_run(self):
        directory = support.temp_dir(self)
        server = FakeServer({"rcpt": seq(b"250 ok\r\n", b"550 5.1.1 no\r\n")}).start(self)
        path = os.path.join(directory, "run.json")
        result = run_tool(OURS, M + ["-A", "-s", "2", "-m", "20", "-d", "-r", "2",
                                     "--report=json:" + path, "TARGET"], server)
        self.assertEqual((result.rc, result.stdout), (0, b""))
        with open(path) as handle:
            data = json.load(handle)
        page = support.run(merge_command("--report=html", path))
        self.assertEqual((page.returncode, page.stderr), (0, b""))
        text, parsed = checked_text(self, page.stdout.decode())
        shown = parsed.text
        self.assertIn("smtp-source report: %d messages in %.3f s" % (
            data["messages"], data["elapsed"]), shown)
        for phase, name in (("mail", "MAIL"), ("rcpt", "RCPT"), ("dot", "end of data")):
            row = data["latency_ms"][phase]
            self.assertIn("%s %d %s" % (name, row["count"], " ".join(
                "%.3f" % row[key] for key in ("min", "p50", "p90", "p99", "max"))), shown)
        self.assertIn("reply count " + " ".join("%s %d" % item for item in
                                                data["replies"].items()), shown)
        self.assertIn("error count rejected_rcpt %d" % data["errors"]["rejected_rcpt"], shown)
        self.assertIn(" ".join(data["sources"][0]["command"]), shown)
        # Written by the run itself, to stdout.
        result = run_tool(OURS, M + ["-m", "3", "--report=html", "TARGET"], server)
        self.assertEqual((result.rc, result.stderr), (0, b""))
        checked_text(self, result.stdout.decode())


class StartAtTest(unittest.TestCase):

    def assertFails(self, args, stderr):
        server = FakeServer().start(self)
        result = run_tool(OURS, M + args + ["TARGET"], server)
        self.assertEqual((result.rc, result.stderr, result.connections), (1, stderr, []))

    def test_refused_times(self):
        self.assertFails(["--start-at=1"], b"smtp-source: fatal: --start-at time is in the "
                                           b"past: 1\n")
        later = "%d" % (time.time() + 3 * 86400)
        self.assertFails(["--start-at", later], b"smtp-source: fatal: --start-at time is more "
                                                b"than 24 hours ahead: %s\n" % later.encode())
        for value in ("25:00:00", "12:60:00", "1:02:03", "12:00", "-5", "noon", ""):
            with self.subTest(value=value):
                self.assertFails(["--start-at=" + value], b"smtp-source: fatal: bad --start-at "
                                                          b"value: %s\n" % value.encode())

    def test_clock_time_is_today_in_local_time(self):
        today = time.localtime()
        self.assertEqual(smtp_source.start_time("07:08:09"), time.mktime(
            (today.tm_year, today.tm_mon, today.tm_mday, 7, 8, 9, 0, 0, -1)))
        self.assertEqual(smtp_source.start_time("1800000000.25"), 1800000000.25)


class MergeCommandTest(unittest.TestCase):
    """--merge-reports as a command: what it reads, writes and refuses."""

    def write(self, directory, name, report):
        path = os.path.join(directory, name)
        with open(path, "w") as handle:
            handle.write(report.json())
        return path

    def test_reads_files_and_stdin_writes_where_told(self):
        directory = support.temp_dir(self)
        first = self.write(directory, "a.json", make_report({"mail": [1000, 3000]},
                                                            counts=(1, 2, 2, 100)))
        with open(self.write(directory, "b.json", make_report(
                {"mail": [2000]}, counts=(1, 1, 1, 50)))) as handle:
            second = handle.read().encode()
        result = subprocess.run(merge_command(first, "-"), input=second, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=support.TIMEOUT)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertRegex(result.stdout.decode(), r"\Asmtp-source report: 3 messages in "
                                                 r"10\.000 s\n  merged from 2 reports \(")
        self.assertIn("\n  MAIL                3 ", result.stdout.decode())
        # The output may replace an input: it is opened once they were read.
        result = support.run(merge_command("--report=json:" + first, first))
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, b"", b""))
        with open(first) as handle:
            self.assertEqual(json.load(handle)["messages"], 2)

    def test_refusals(self):
        directory = support.temp_dir(self)
        report = make_report({"mail": [1000]})
        one = self.write(directory, "one.json", report)
        other = self.write(directory, "other.json", make_report(
            {"mail": [1000]}, opts=options(disconnect=False)))
        missing = os.path.join(directory, "missing.json")
        newer = os.path.join(directory, "newer.json")
        with open(newer, "w") as handle:
            handle.write(report.json().replace('"schema": 1', '"schema": 2', 1))
        for args, stderr in (
                ([newer], "%s: report schema 2; this smtp-source reads schema 1" % newer),
                ([one, "/dev/null"], "/dev/null: not a JSON report: Expecting value: line 1 "
                                     "column 1 (char 0)"),
                ([one, missing], "open %s: No such file or directory" % missing),
                ([one, other], "%s: not the same settings as %s: reuse true (%s: false)"
                 % (other, one, one)),
                ([one, one], "%s: run %s is in %s too (the same report twice?)"
                 % (one, report.id, one)),
                (["-s", "2", one], "--merge-reports sends nothing: -s does not go with it"),
                (["--report=html:" + directory, one], "open %s: Is a directory" % directory)):
            with self.subTest(args=args):
                result = support.run(merge_command(*args))
                self.assertEqual((result.returncode, result.stdout, result.stderr),
                                 (1, b"", b"smtp-source: fatal: %s\n" % stderr.encode()))
        result = support.run(merge_command())
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith(b"smtp-source: fatal: usage: "), result.stderr)


if __name__ == "__main__":
    unittest.main()
