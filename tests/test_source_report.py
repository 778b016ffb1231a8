"""smtp_source.py --report and --rate over real sockets: the JSON schema,
the counts against what the server saw, the latency of each phase, the
text table, a report after a fatal error, faults injected by a sink
(ours and Postfix's: -f ., -q, -A, -Q) showing up in the report, and
latency measured from the intended send time with --rate.
"""

import json
import re
import socket
import threading
import unittest

import smtp_source
from tests import support
from tests.fake_smtp import OURS, FakeServer, run_tool, seq
from tests.test_source_modern import ehlo, server_context

M = ["-M", "client.example"]
PHASES = ["connect", "tls", "greeting", "helo", "starttls", "mail", "rcpt", "data", "bdat",
          "dot", "rset", "quit", "message", "response"]
ERRORS = ["connect", "lost", "timeout", "tls", "rejected_greeting", "rejected_helo",
          "rejected_starttls", "rejected_mail", "rejected_rcpt", "rejected_data",
          "rejected_bdat", "rejected_dot", "rejected_rset"]
KEYS = ["schema", "status", "elapsed", "sessions", "messages", "messages_sent", "recipients",
        "bytes", "messages_per_second", "recipients_per_second", "mb_per_second", "rate",
        "latency_ms", "replies", "errors", "integrity",
        # added within schema 1, for merging (--merge-reports) and the page
        "started", "ended", "settings", "sources", "histograms", "timeline"]


def delayed(reply, seconds):
    """A reply script: the server takes its time (what is measured)."""
    def answer(conn, stage):
        threading.Event().wait(seconds)
        return reply
    return answer


class ReportCase(support.BothEngines, unittest.TestCase):

    def source(self, args, replies=None, lmtp=False, tls=False, server=None):
        if server is None:
            server = FakeServer(replies, lmtp=lmtp,
                                tls_context=server_context() if tls else None).start(self)
        self.server = server
        return run_tool(OURS, M + list(args) + ["TARGET"], server)

    def report(self, result):
        """The JSON report on stdout (after any -c count)."""
        text = result.stdout.decode()
        start = text.index("{")
        self.assertEqual(text[:start].strip("0123456789\r\n"), "", text[:start])
        return json.loads(text[start:])

    def assertSchema(self, data):
        self.assertEqual(list(data), KEYS)
        self.assertEqual(data["schema"], 1)
        for key in ("status", "sessions", "messages", "messages_sent", "recipients", "bytes"):
            self.assertIsInstance(data[key], int, key)
        self.assertIsInstance(data["elapsed"], float)
        for key in ("messages_per_second", "recipients_per_second", "mb_per_second"):
            self.assertIsInstance(data[key], (int, float), key)
        self.assertTrue(data["rate"] is None or isinstance(data["rate"], float))
        self.assertEqual(list(data["latency_ms"]), PHASES)
        for phase, row in data["latency_ms"].items():
            self.assertEqual(list(row), ["count", "min", "p50", "p90", "p99", "max"], phase)
            self.assertIsInstance(row["count"], int)
            values = [row[key] for key in ("min", "p50", "p90", "p99", "max")]
            if row["count"]:
                for value in values:
                    self.assertIsInstance(value, float, phase)
                self.assertEqual(values, sorted(values), phase)
            else:
                self.assertEqual(values, [None] * 5, phase)
        for code, count in data["replies"].items():
            self.assertRegex(code, r"^\d{3}$")
            self.assertIsInstance(count, int)
        self.assertEqual(list(data["errors"]), ERRORS)
        self.assertTrue(data["integrity"] is None or list(data["integrity"]) == ["run", "count"])

    def counts(self, data):
        return {phase: row["count"] for phase, row in data["latency_ms"].items() if row["count"]}


class JsonTests(ReportCase):

    def test_schema_and_counts(self):
        result = self.source(["--report=json", "-m", "5", "-r", "2", "-d"])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        data = self.report(result)
        self.assertSchema(data)
        [conn] = result.connections
        self.assertEqual({k: data[k] for k in KEYS[:8] if k != "elapsed"}, {
            "schema": 1, "status": 0, "sessions": 1, "messages": 5, "messages_sent": 5,
            "recipients": 10, "bytes": sum(len(m) for m in conn.messages())})
        self.assertEqual(self.counts(data), {"connect": 1, "greeting": 1, "helo": 1, "mail": 5,
                                             "rcpt": 10, "data": 5, "dot": 5, "quit": 1,
                                             "message": 5})
        self.assertEqual(data["replies"], {"220": 1, "221": 1, "250": 21, "354": 5})
        self.assertEqual(set(data["errors"].values()), {0})
        self.assertIsNone(data["rate"])
        self.assertIsNone(data["integrity"])
        rate = 5 / data["elapsed"]
        self.assertAlmostEqual(data["messages_per_second"], rate, delta=rate / 1000)
        self.assertAlmostEqual(data["recipients_per_second"], 2 * rate, delta=rate / 500)

    def test_the_conversation_is_unchanged(self):
        plain = self.source(["-m", "3", "-d", "-r", "2"]).connections[0].commands()
        reported = self.source(["--report=json", "-m", "3", "-d", "-r", "2"])
        self.assertEqual(reported.connections[0].commands(), plain)

    def test_parallel_sessions(self):
        result = self.source(["--report=json", "-s", "4", "-m", "12"])
        data = self.report(result)
        self.assertEqual((data["sessions"], data["messages"]), (12, 12))
        self.assertEqual(self.counts(data)["connect"], 12)
        self.assertEqual(self.counts(data)["quit"], 12)

    def test_latency_is_the_servers(self):
        # RCPT takes the server 0.2 s, the rest no time.
        result = self.source(["--report=json", "-m", "3", "-d"],
                             {"rcpt": delayed(b"250 ok\r\n", 0.2)})
        latency = self.report(result)["latency_ms"]
        self.assertGreaterEqual(latency["rcpt"]["min"], 200)
        self.assertLess(latency["rcpt"]["max"], 200 + 5000)
        self.assertLess(latency["mail"]["p50"], 200)
        self.assertGreaterEqual(latency["message"]["min"], latency["rcpt"]["min"])

    def test_rejections_with_A(self):
        replies = {"rcpt": seq(b"250 ok\r\n", b"550 5.1.1 no\r\n"), "dot": b"452 4.3.1 full\r\n",
                   "mail": seq(b"250 ok\r\n", b"250 ok\r\n", b"451 later\r\n")}
        result = self.source(["--report=json", "-A", "-m", "3", "-d", "-r", "2"], replies)
        data = self.report(result)
        # 1: one RCPT of two accepted, "." refused; 2: no RCPT accepted,
        # RSET; 3: MAIL refused, RSET.
        self.assertEqual(data["errors"]["rejected_rcpt"], 3)
        self.assertEqual(data["errors"]["rejected_dot"], 1)
        self.assertEqual(data["errors"]["rejected_mail"], 1)
        self.assertEqual((data["messages"], data["messages_sent"], data["recipients"]), (0, 1, 0))
        self.assertEqual(self.counts(data)["rset"], 2)
        self.assertEqual(data["replies"]["550"], 3)

    def test_lmtp_counts_recipients_by_their_replies(self):
        result = self.source(["--report=json", "-L", "-A", "-r", "3"],
                             {"dot": seq(b"250 ok\r\n", b"250 ok\r\n", b"550 5.1.1 gone\r\n")},
                             lmtp=True)
        data = self.report(result)
        self.assertEqual((data["messages"], data["recipients"]), (1, 2))
        self.assertEqual(self.counts(data)["dot"], 3)
        self.assertEqual(data["errors"]["rejected_dot"], 1)

    def test_after_a_fatal_error(self):
        result = self.source(["--report=json", "-m", "4", "-d"],
                             {"mail": seq(b"250 ok\r\n", None)})
        self.assertEqual((result.rc, result.stderr),
                         (1, b"smtp-source: fatal: lost connection while sending sender\n"))
        data = self.report(result)
        self.assertSchema(data)
        self.assertEqual((data["status"], data["messages"], data["errors"]["lost"]), (1, 1, 1))

    def test_connection_refused(self):
        port = support.free_port()
        result = run_tool(OURS, ["--report=json", "-C", "2", "127.0.0.1:%d" % port])
        self.assertEqual(result.rc, 1)
        data = self.report(result)
        self.assertEqual((data["sessions"], data["errors"]["connect"]), (0, 2))

    def test_with_c(self):
        result = self.source(["--report=json", "-c", "-m", "2"])
        self.assertTrue(result.stdout.startswith(b"1\r2\r\n{"), result.stdout[:10])
        self.assertEqual(self.report(result)["messages"], 2)

    def test_extensions_have_their_phases(self):
        def hello(conn, stage):
            return ehlo("PIPELINING", "CHUNKING") if conn.tls else ehlo("STARTTLS")
        result = self.source(["--report=json", "--starttls", "--pipelining", "--bdat=100",
                              "-l", "250", "-m", "2", "-d", "-r", "2", "--integrity"],
                             {"helo": hello}, tls=True)
        self.assertEqual((result.rc, result.stderr), (0, b""))
        data = self.report(result)
        chunks = [c for c in result.connections[0].commands() if c.startswith(b"BDAT ")]
        self.assertEqual(self.counts(data), {"connect": 1, "tls": 1, "greeting": 1, "helo": 2,
                                             "starttls": 1, "mail": 2, "rcpt": 4,
                                             "bdat": len(chunks) - 2, "dot": 2, "quit": 1,
                                             "message": 2})
        self.assertEqual(data["bytes"], sum(len(m) for m in
                                            result.connections[0].chunked_messages()))
        self.assertRegex(data["integrity"]["run"], "^[0-9a-f]{16}$")
        self.assertEqual(data["integrity"]["count"], 2)

    def test_tls_failure(self):
        result = self.source(["--report=json", "--tls"])
        self.assertEqual(self.report(result)["errors"]["tls"], 1)


class TextTests(ReportCase):

    def test_table(self):
        result = self.source(["--report=text", "-m", "20", "-s", "2", "-d"])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        text = result.stdout.decode()
        self.assertRegex(text, r"^smtp-source report: 20 messages in \d+\.\d{3} s\n")
        self.assertRegex(text, r"\n  messages +20 +\d+\.\d /s   \(sent 20\)\n")
        self.assertRegex(text, r"\n  latency \(ms\) +count +min +p50 +p90 +p99 +max\n")
        self.assertRegex(text, r"\n  MAIL +20( +\d+\.\d{3}){5}\n")
        self.assertRegex(text, r"\n  end of data +20( +\d+\.\d{3}){5}\n")
        self.assertNotIn("BDAT", text)                  # phases not used are left out
        self.assertIn("\n  message latency (MAIL to end-of-data reply):\n", text)
        bars = re.findall(r"\n +\d+\.\d{3} - +\d+\.\d{3} ms  [#.]* +(\d+)", text)
        self.assertEqual(sum(map(int, bars)), 20)
        self.assertIn("\n  replies: 220 x2, 221 x2, 250 x62, 354 x20\n", text)
        self.assertTrue(text.endswith("\n  errors:  none\n"))

    def test_errors_and_fatal(self):
        result = self.source(["--report=text", "-A", "-m", "2"], {"data": b"554 no\r\n"})
        self.assertIn("\n  errors:  rejected_data x2\n", result.stdout.decode())
        result = self.source(["--report", "text"], {"rcpt": None})
        self.assertEqual(result.rc, 1)
        text = result.stdout.decode()
        self.assertIn("(ended by a fatal error)", text.splitlines()[0])
        self.assertTrue(text.endswith("\n  errors:  lost x1\n"))


class RateTests(ReportCase):

    def test_response_time_counts_from_when_a_message_was_due(self):
        # 10 messages at 50/s on one session; the server takes 0.3 s over
        # the first message's end of data.  The later messages are late by
        # then: their service time is short, their response time is not
        # (a closed-loop tool would hide that: coordinated omission).
        slow_first = seq(delayed(b"250 ok\r\n", 0.3), b"250 ok\r\n")

        def dot(conn, stage):
            reply = slow_first(conn, stage)
            return reply(conn, stage) if callable(reply) else reply
        result = self.source(["--report=json", "--rate=50/s", "-m", "10", "-d"], {"dot": dot})
        data = self.report(result)
        self.assertEqual(data["rate"], 50.0)
        latency = data["latency_ms"]
        self.assertEqual((latency["message"]["count"], latency["response"]["count"]), (10, 10))
        self.assertLess(latency["message"]["p50"], 250)
        # Message 1 was due 20 ms after the start, and sent after 300 ms.
        self.assertGreaterEqual(latency["response"]["p50"], 100)
        self.assertGreaterEqual(latency["response"]["max"], 280)
        self.assertGreaterEqual(data["elapsed"], 0.3)

    def test_no_response_without_rate(self):
        data = self.report(self.source(["--report=json", "-m", "2"]))
        self.assertEqual(data["latency_ms"]["response"]["count"], 0)


class SinkFaultTests(ReportCase):
    """A faulty path made by the sink, ours and Postfix's, as the report
    shows it."""

    def sink(self, kind, args):
        port = support.free_port()
        program = [support.POSTFIX_SINK] if kind == "postfix" else support.python_cmd(
            support.SINK)
        server = support.Server(program + support.PRIVS + args + ["127.0.0.1:%d" % port, "64"],
                                ("127.0.0.1", port), socket.AF_INET).start(self)
        return server, "127.0.0.1:%d" % port

    def run_against(self, kind, sink_args, source_args):
        if kind == "postfix":
            support.need_postfix()
        server, target = self.sink(kind, sink_args)
        result = run_tool(OURS, M + ["--report=json"] + source_args + [target])
        server.stop()
        return result, self.report(result)

    def test_rejected_end_of_data(self):
        for kind in ("ours", "postfix"):
            with self.subTest(sink=kind):
                result, data = self.run_against(kind, ["-f", "."], ["-A", "-m", "4", "-d"])
                self.assertEqual(result.rc, 0)
                self.assertEqual((data["messages"], data["messages_sent"], data["recipients"]),
                                 (0, 4, 0))
                self.assertEqual(data["errors"]["rejected_dot"], 4)
                self.assertEqual(data["replies"]["500"], 4)
                self.assertEqual(data["latency_ms"]["dot"]["count"], 4)

    def test_hang_up_on_rcpt(self):
        for kind in ("ours", "postfix"):
            with self.subTest(sink=kind):
                result, data = self.run_against(kind, ["-q", "rcpt"], ["-m", "3", "-d"])
                self.assertEqual((result.rc, result.stderr), (1, b"smtp-source: fatal: lost "
                                                                 b"connection while sending "
                                                                 b"recipient\n"))
                self.assertEqual((data["status"], data["messages"], data["errors"]["lost"]),
                                 (1, 0, 1))
                self.assertEqual(data["latency_ms"]["mail"]["count"], 1)
                self.assertEqual(data["latency_ms"]["rcpt"]["count"], 0)

    def test_abort_after_data(self):
        # -A 1: a second after the 354, "550" and the sink hangs up.
        for kind in ("ours", "postfix"):
            with self.subTest(sink=kind):
                result, data = self.run_against(kind, ["-A", "1"], ["-A", "-m", "2", "-d"])
                self.assertEqual(result.rc, 1)
                self.assertEqual(data["errors"]["rejected_dot"], 1)
                self.assertEqual(data["errors"]["lost"], 1)
                self.assertEqual(data["replies"]["550"], 1)
                self.assertGreaterEqual(data["latency_ms"]["dot"]["max"], 900)

    def test_421_on_mail(self):
        for kind in ("ours", "postfix"):
            with self.subTest(sink=kind):
                result, data = self.run_against(kind, ["-Q", "mail"], ["-m", "2"])
                self.assertEqual(result.rc, 1)
                self.assertEqual(data["errors"]["rejected_mail"], 1)
                self.assertEqual(data["replies"]["421"], 1)

    def test_healthy_sink(self):
        for kind in ("ours", "postfix"):
            with self.subTest(sink=kind):
                result, data = self.run_against(kind, [], ["-s", "5", "-m", "200", "-d",
                                                           "-r", "2"])
                self.assertEqual((result.rc, result.stderr), (0, b""))
                self.assertEqual((data["sessions"], data["messages"], data["recipients"]),
                                 (5, 200, 400))
                self.assertEqual(data["replies"], {"220": 5, "221": 5, "250": 805, "354": 200})


class UnitTests(unittest.TestCase):

    def session(self, *args):
        import io
        from smtpcore import messages
        msg = messages.Messages("t", stream=io.BytesIO())
        opts = smtp_source.parse_options(M + list(args) + ["x"], msg)
        opts.sender = opts.recipient = b"a@b"
        run = smtp_source.Run(opts, msg, smtp_source.Content(opts, 1))
        self.addCleanup(run.close_all)
        return smtp_source.Session(run, 0)

    def test_without_report_nothing_is_wrapped(self):
        session = self.session()
        self.assertIsNone(session.run.report)
        for name in ("send", "reply", "try_connect"):
            self.assertNotIn(name, vars(session))
        session = self.session("--report=json")
        self.assertEqual(vars(session)["send"], session.timed_send)
        self.assertEqual(vars(session)["reply"], session.timed_reply)
        self.assertIn("try_connect", vars(session))

    def test_rate_values(self):
        from smtpcore import messages
        for text, rate in (("5", 5.0), ("2.5/s", 2.5), ("120/m", 2.0), (".5", 0.5)):
            opts = smtp_source.parse_options(["--rate=" + text, "x"],
                                             messages.Messages("t", stream=None))
            self.assertEqual(opts.rate, rate)


if __name__ == "__main__":
    unittest.main()
