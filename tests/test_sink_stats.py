"""smtp-sink --stats=SECONDS[,FILE] over real sockets: a JSON line per
interval, on demand (SIGUSR1) and at the end (-M, -n, SIGTERM); where the
lines go; and that -c's counters are untouched by it."""

import json
import os
import socket
import stat
import unittest

from tests import support
from tests.support import InProcessSink, Wait

CONVERSATION = [b"EHLO client.example\r\n", b"MAIL FROM:<a@example.com>\r\n",
                b"RCPT TO:<b@example.com>\r\n", b"RCPT TO:<c@example.com>\r\n",
                b"DATA\r\n", b"Subject: s\r\n\r\nbody\r\n.\r\n", b"NOOP\r\n", b"BOGUS\r\n",
                b"QUIT\r\n"]
FIELDS = ["event", "time", "uptime", "sessions", "active", "messages", "recipients",
          "bytes", "rates", "replies"]


def stats_lines(data):
    return [json.loads(line) for line in data.replace(b"\r", b"\n").split(b"\n")
            if line.startswith(b"{")]


def read_lines(path):
    try:
        with open(path, "rb") as f:
            return stats_lines(f.read())
    except FileNotFoundError:
        return []


class StatsTest(support.BothEngines, unittest.TestCase):

    def test_counts(self):
        sink = InProcessSink(self, ["--stats=0"])
        data, _ = sink.converse(CONVERSATION)
        self.assertTrue(data.endswith(b"221 Bye\r\n"))
        sink.stop()
        [line] = stats_lines(sink.stdout())
        self.assertEqual(list(line), FIELDS)            # no "verify" without --verify
        self.assertEqual(line["event"], "exit")
        self.assertEqual((line["sessions"], line["active"], line["messages"],
                          line["recipients"], line["bytes"]),
                         (1, 0, 1, 2, len(b"".join(CONVERSATION))))
        self.assertEqual(line["replies"], {"220": 1, "221": 1, "250": 6, "354": 1, "500": 1})
        self.assertEqual(set(line["rates"]), {"sessions", "messages", "recipients", "bytes"})

    def test_interval_lines_and_rates(self):
        sink = InProcessSink(self, ["--stats=0.2"])
        for _ in range(3):
            sink.converse(CONVERSATION)
        lines = support.wait_until(
            lambda: [l for l in stats_lines(sink.stdout()) if l["messages"] == 3][1:] and
            stats_lines(sink.stdout()), what="two lines after the messages")
        self.assertTrue(all(line["event"] == "interval" for line in lines))
        for before, after in zip(lines, lines[1:]):
            span = after["uptime"] - before["uptime"]
            self.assertGreater(span, 0.1)
            for name in ("sessions", "messages", "recipients", "bytes"):
                expected = (after[name] - before[name]) / span
                self.assertAlmostEqual(after["rates"][name], expected,
                                       delta=0.01 * expected + 0.1)
        self.assertEqual(lines[-1]["recipients"], 6)

    def test_active_sessions(self):
        sink = InProcessSink(self, ["--stats=0"])
        held = [support.connect(sink.address, sink.family) for _ in range(2)]
        for sock in held:
            self.addCleanup(sock.close)
            self.assertTrue(support.recv_until(sock, b"\r\n").startswith(b"220 "))
        sink.server.request_report()
        [line] = support.wait_until(lambda: stats_lines(sink.stdout()), what="a line")
        self.assertEqual((line["event"], line["active"], line["sessions"]), ("signal", 2, 2))

    def test_to_a_file_and_counters_unchanged(self):
        # -c writes the same bytes with and without --stats going to a file.
        path = os.path.join(support.temp_dir(self), "stats.jsonl")
        plain = InProcessSink(self, ["-c"])
        stats = InProcessSink(self, ["-c", "--stats=0," + path])
        for sink in (plain, stats):
            sink.converse(CONVERSATION)
            sink.converse([b"NOOP\r\n"])
            # A session is counted just after its socket is closed.
            support.wait_until(lambda: sink.stdout().count(b"\r") == 3, what="-c's lines")
            sink.stop()
        self.assertEqual(stats.stdout(), plain.stdout())
        self.assertEqual(plain.stdout(), b"sess=0 quit=0 mesg=1\rsess=1 quit=1 mesg=1\r"
                                         b"sess=2 quit=1 mesg=1\r")
        [line] = read_lines(path)
        self.assertEqual((line["event"], line["sessions"], line["messages"]), ("exit", 2, 1))

    def test_dash_is_stdout(self):
        sink = InProcessSink(self, ["--stats=0,-"])
        sink.stop()
        self.assertEqual(stats_lines(sink.stdout())[0]["event"], "exit")

    def test_plain_session_without_options(self):
        # Decided once: without our options the lean Session serves, and
        # nothing is counted for --stats.
        import smtp_sink
        sink = InProcessSink(self, [])
        self.assertIs(sink.server.session_class, smtp_sink.Session)
        self.assertIsNone(sink.server.stats)
        sink = InProcessSink(self, ["--stats=0"])
        self.assertIs(sink.server.session_class, smtp_sink.ExtendedSession)


class StatsProcessTest(support.BothEngines, unittest.TestCase):
    """The last line when the program ends; the file, opened as root."""

    def start(self, args, probe=True):
        port = support.free_port()
        server = support.Server(support.python_cmd(support.SINK, *(support.PRIVS + args)) +
                                ["127.0.0.1:%d" % port, "10"], ("127.0.0.1", port),
                                socket.AF_INET)
        return server.start(self), ("127.0.0.1", port)

    def test_last_line_at_quit_limit(self):
        server, address = self.start(["-c", "-n", "1", "--stats=0"])
        support.converse(address, socket.AF_INET, CONVERSATION)
        rc, out, err = server.wait()
        self.assertEqual((rc, err), (0, b""))
        counters, _, rest = out.rpartition(b"\r")
        self.assertEqual(counters, b"sess=0 quit=0 mesg=1\rsess=1 quit=1 mesg=1")
        [line] = stats_lines(rest)
        self.assertEqual((line["event"], line["messages"], line["replies"]["221"]),
                         ("exit", 1, 1))

    def test_last_line_at_message_limit(self):
        server, address = self.start(["-M", "2", "--stats=0"])
        support.converse(address, socket.AF_INET,
                         CONVERSATION[:6] + [Wait(b"250 2.0.0 Ok")] + CONVERSATION[1:6])
        rc, out, err = server.wait()
        self.assertEqual((rc, err), (0, b""))
        [line] = stats_lines(out)
        self.assertEqual((line["event"], line["messages"]), ("exit", 2))

    def test_last_line_at_sigterm(self):
        server, address = self.start(["--stats=60"])
        support.converse(address, socket.AF_INET, CONVERSATION)
        rc, out, err = server.stop()
        self.assertEqual((rc, err), (-15, b""))
        [line] = stats_lines(out)
        self.assertEqual((line["event"], line["messages"], line["sessions"]), ("exit", 1, 1))

    def test_file_opened_before_privileges_are_dropped(self):
        if not support.IS_ROOT:
            support.loud_skip("root (to drop privileges)")
        directory = support.temp_dir(self)
        private = os.path.join(directory, "private")
        os.mkdir(private, 0o700)                    # nobody cannot get in
        path = os.path.join(private, "stats.jsonl")
        with open(path, "wb") as f:
            f.write(b"earlier\n")
        server, address = self.start(["--stats=0.1," + path])
        support.converse(address, socket.AF_INET, CONVERSATION)
        support.wait_until(lambda: any(l["messages"] == 1 for l in read_lines(path)),
                           what="an interval line")
        server.stop()
        with open(path, "rb") as f:
            self.assertTrue(f.read().startswith(b"earlier\n{"))
        self.assertEqual(read_lines(path)[-1]["event"], "exit")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o022, 0)

    def test_bad_values(self):
        for args, complaint in (
                (["--stats=abc"], b"bad --stats interval: abc"),
                (["--stats=-1"], b"bad --stats interval: -1"),
                (["--stats=1e3"], b"bad --stats interval: 1e3"),
                (["--stats=1,/nonexistent/dir/x"],
                 b"open /nonexistent/dir/x: No such file or directory")):
            with self.subTest(args=args):
                result = support.run(support.python_cmd(
                    support.SINK, *(support.PRIVS + args + ["127.0.0.1:0", "5"])))
                self.assertEqual(result.returncode, 1)
                self.assertIn(complaint, result.stderr)
        result = support.run(support.python_cmd(support.SINK, *(support.PRIVS + ["--stats"])))
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith(
            b"smtp-sink: option '--stats' requires an argument\nsmtp-sink: fatal: usage: "))


if __name__ == "__main__":
    unittest.main()
