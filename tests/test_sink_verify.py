"""smtp-sink --verify over real sockets: messages that carry smtp-source's
X-Smtp-Integrity line are counted ok, corrupt, duplicate and missing, per
run id; the counts show in the statistics lines (at exit, on SIGUSR1, and
every --stats interval).  The clients here compute the line with
smtpcore.integrity, as smtp-source --integrity does; the last test runs
our smtp-source --integrity against the sink, end to end."""

import json
import os
import signal
import socket
import unittest

from smtpcore import integrity
from tests import load, support
from tests.support import InProcessSink, Wait

RUN = b"0123456789abcdef"
OTHER_RUN = b"fedcba9876543210"
BODY = (b"Subject: integrity %d\r\n\r\n.a line that starts with a dot\r\n"
        b"..and two\r\n.\r\nnot the end: a dot alone was stuffed\r\nlast line\r\n")


def message(seq, count, run=RUN, body=None):
    """A message as smtp-source --integrity means it (CRLF, unstuffed)."""
    body = BODY % seq if body is None else body
    return integrity.header(run, seq, count, body) + body


def stuffed(text):
    """What goes over the wire after DATA (RFC 5321 4.5.2), with the end."""
    return (b"\r\n" + text).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


def transaction(text):
    return (b"MAIL FROM:<source@example.com>\r\nRCPT TO:<sink@example.com>\r\nDATA\r\n"
            + stuffed(text))


def stats_lines(data):
    """The JSON lines in what the sink wrote (-c counters end in CR)."""
    return [json.loads(line) for line in data.replace(b"\r", b"\n").split(b"\n")
            if line.startswith(b"{")]


class VerifyTest(support.BothEngines, unittest.TestCase):
    """The counts, over one pipelining connection and several."""

    def test_ok_corrupt_duplicate_missing(self):
        sink = InProcessSink(self, ["--verify"])
        count = 5
        corrupt = message(2, count)
        corrupt = corrupt.replace(b"not the end", b"not the End")    # after the digest
        steps = [b"EHLO client.example\r\n",
                 transaction(message(0, count)),            # ok
                 transaction(message(1, count)),            # ok (dots stuffed on the wire)
                 transaction(corrupt),                      # corrupt
                 transaction(message(1, count)),            # duplicate
                 transaction(message(4, count)),            # ok; 3 never comes: missing
                 transaction(b"Subject: no integrity line\r\n\r\nx\r\n"),
                 b"QUIT\r\n"]
        data, _ = sink.converse(steps)
        self.assertEqual(data.count(b"250 2.0.0 Ok\r\n"), 6)   # every message accepted
        sink.stop()
        [final] = stats_lines(sink.stdout())
        self.assertEqual(final["event"], "exit")
        self.assertEqual(final["verify"], {
            "runs": {RUN.decode(): {"ok": 3, "corrupt": 1, "duplicate": 1, "missing": 1,
                                    "count": 5}},
            "unmarked": 1})
        self.assertEqual(final["messages"], 6)
        self.assertIn(b"warning: integrity: corrupt message: run=%s seq=2" % RUN, sink.stderr())

    def test_runs_are_counted_apart(self):
        sink = InProcessSink(self, ["--verify"])
        for run, seqs in ((RUN, (0, 1)), (OTHER_RUN, (1,)), (RUN, (2,))):
            steps = [transaction(message(seq, 3, run)) for seq in seqs] + [b"QUIT\r\n"]
            sink.converse(steps)
        sink.stop()
        runs = stats_lines(sink.stdout())[-1]["verify"]["runs"]
        self.assertEqual(runs[RUN.decode()], {"ok": 3, "corrupt": 0, "duplicate": 0,
                                              "missing": 0, "count": 3})
        self.assertEqual(runs[OTHER_RUN.decode()], {"ok": 1, "corrupt": 0, "duplicate": 0,
                                                    "missing": 2, "count": 3})

    def test_message_in_many_packets(self):
        # A large message, written in odd pieces: the end of data, the dot
        # stuffing and the digest do not depend on where the packets end.
        sink = InProcessSink(self, ["--verify"])
        body = b"".join(b".%06d some text to make the line longer\r\n" % i for i in range(40000))
        wire = transaction(message(0, 1, body=body))
        steps = [wire[i:i + 7777] for i in range(0, len(wire), 7777)] + [b"QUIT\r\n"]
        data, _ = sink.converse(steps)
        self.assertIn(b"250 2.0.0 Ok\r\n", data)
        sink.stop()
        self.assertEqual(stats_lines(sink.stdout())[-1]["verify"]["runs"][RUN.decode()]["ok"], 1)

    def test_on_demand(self):
        # What SIGUSR1 does (tested with a real signal below): a line now,
        # with the messages missing so far.
        sink = InProcessSink(self, ["--verify"])
        sink.converse([transaction(message(0, 4)), transaction(message(3, 4)), b"QUIT\r\n"])
        sink.server.request_report()
        lines = support.wait_until(lambda: stats_lines(sink.stdout()), what="a stats line")
        self.assertEqual(lines[0]["event"], "signal")
        self.assertEqual(lines[0]["verify"]["runs"][RUN.decode()]["missing"], 2)

    def test_rejected_dot_still_verified(self):
        # As a rejected "." still captures and counts the message.
        sink = InProcessSink(self, ["--verify", "-f", "."])
        data, _ = sink.converse([transaction(message(0, 1)), b"QUIT\r\n"])
        self.assertIn(b"500 5.3.0 Error: command failed\r\n", data)
        sink.stop()
        self.assertEqual(stats_lines(sink.stdout())[-1]["verify"]["runs"][RUN.decode()]["ok"], 1)

    def test_without_verify_nothing_is_written(self):
        sink = InProcessSink(self, [])
        self.assertIsNone(sink.server.verifier)
        sink.converse([transaction(message(0, 1)), b"QUIT\r\n"])
        sink.stop()
        self.assertEqual(sink.stdout(), b"")


class VerifyProcessTest(support.BothEngines, unittest.TestCase):
    """The counts at the end of a real process: -M, SIGUSR1, SIGTERM."""

    def start(self, args):
        port = support.free_port()
        server = support.Server(support.python_cmd(support.SINK, *(support.PRIVS + args)) +
                                ["127.0.0.1:%d" % port, "10"], ("127.0.0.1", port),
                                socket.AF_INET)
        return server.start(self), ("127.0.0.1", port)

    def test_final_counts_at_message_limit(self):
        server, address = self.start(["--verify", "-M", "3"])
        support.converse(address, socket.AF_INET,
                         [transaction(message(0, 4)), Wait(b"250 2.0.0"),
                          transaction(message(0, 4)), Wait(b"250 2.0.0", 2),
                          transaction(message(2, 4))])
        rc, out, err = server.wait()
        self.assertEqual(rc, 0, err)
        [final] = stats_lines(out)
        self.assertEqual(final["event"], "exit")
        self.assertEqual(final["verify"]["runs"][RUN.decode()],
                         {"ok": 2, "corrupt": 0, "duplicate": 1, "missing": 2, "count": 4})

    def test_sigusr1_then_sigterm(self):
        directory = support.temp_dir(self)
        path = os.path.join(directory, "stats.jsonl")
        server, address = self.start(["--verify", "--stats=0," + path])
        support.converse(address, socket.AF_INET, [transaction(message(1, 2)), b"QUIT\r\n"])

        def lines():
            try:
                with open(path, "rb") as f:
                    return stats_lines(f.read())
            except FileNotFoundError:
                return []

        os.kill(server.proc.pid, signal.SIGUSR1)
        [line] = support.wait_until(lines, what="the SIGUSR1 line")
        self.assertEqual(line["event"], "signal")
        self.assertEqual(line["verify"]["runs"][RUN.decode()]["missing"], 1)
        rc, out, err = server.stop()                        # SIGTERM
        self.assertEqual(rc, -signal.SIGTERM)               # still ends as killed
        self.assertEqual((out, err), (b"", b""))
        self.assertEqual([line["event"] for line in lines()], ["signal", "exit"])

    def test_sigusr1_is_left_alone_without_the_options(self):
        # As with Postfix's program: the default action (the end).
        server, _ = self.start([])
        os.kill(server.proc.pid, signal.SIGUSR1)
        rc, _, _ = server.wait()
        self.assertEqual(rc, -signal.SIGUSR1)


class VerifyMemoryTest(support.BothEngines, unittest.TestCase):
    """--verify keeps nothing of a message: its digest is taken as the
    octets stream in (two 64 MB messages once took the sink from 24 MB to
    280 MB), by BDAT and by DATA alike."""

    SIZE = 64 << 20
    BUDGET_KB = 20 * 1024

    def test_peak_memory_of_two_64_mb_messages(self):
        line = b".dotted line, stuffed on the wire " + b"x" * 64 + b"\r\n"
        body = line * (self.SIZE // len(line))
        first, second = (integrity.header(RUN, seq, 2, body) for seq in (0, 1))
        envelope = b"MAIL FROM:<source@example.com>\r\nRCPT TO:<sink@example.com>\r\n"
        steps = [b"EHLO client.example\r\n",
                 envelope + b"BDAT %d LAST\r\n" % (len(first) + len(body)), first, body,
                 envelope + b"DATA\r\n", Wait(b"354 "), second, stuffed(body), b"QUIT\r\n"]
        peaks = {}
        for extra in ([], ["--verify"]):
            sink = load.SinkProcess(self, ["--chunking"] + extra)
            replies, _ = support.converse(sink.address, sink.family, steps, timeout=60)
            self.assertTrue(replies.endswith(b"250 2.0.0 Ok\r\n221 Bye\r\n"), replies[-300:])
            self.assertEqual(replies.count(b"250 2.0.0 Ok\r\n"), 2)
            peaks[bool(extra)] = sink.peak()
            sink.stop()
            self.assertEqual(sink.stderr(), b"")
        [final] = stats_lines(sink.stdout())
        self.assertEqual(final["verify"]["runs"][RUN.decode()],
                         {"ok": 2, "corrupt": 0, "duplicate": 0, "missing": 0, "count": 2})
        load.report("two 64 MB messages (BDAT, DATA)", peak_rss_kB=peaks[False],
                    peak_rss_verify_kB=peaks[True])
        self.assertLess(peaks[True] - peaks[False], self.BUDGET_KB, peaks)


class SourceToSinkTest(support.BothEngines, unittest.TestCase):
    """Our smtp-source --integrity against our smtp-sink --verify."""

    def source_has_integrity(self):
        result = support.run(support.python_cmd(support.SOURCE, "--help"))
        if result.returncode != 0 or b"--integrity" not in result.stdout:
            support.loud_skip("smtp_source.py --integrity")

    def test_end_to_end(self):
        # Plain DATA, BDAT chunks, and BDAT pipelined over STARTTLS: every
        # message of each run arrives once and intact.
        self.source_has_integrity()
        directory = support.temp_dir(self)
        cert, key = support.make_cert(directory)
        capture = os.path.join(directory, "all")
        sink = InProcessSink(self, ["--verify", "--chunking", "--tls-cert", cert,
                                    "--tls-key", key, "-D", capture])
        host, port = sink.address
        for extra in ([], ["--bdat=1000"], ["--starttls", "--pipelining", "--bdat=700"]):
            with self.subTest(extra=extra):
                result = support.run(support.python_cmd(
                    support.SOURCE, "-s", "3", "-m", "12", "-d", "-l", "3000", "--integrity",
                    *extra, "%s:%d" % (host, port)), timeout=60)
                self.assertEqual(result.returncode, 0, result.stderr)
        sink.server.request_report()
        lines = support.wait_until(lambda: stats_lines(sink.stdout()), what="a stats line")
        runs = lines[-1]["verify"]["runs"]
        self.assertEqual(len(runs), 3)
        for counts in runs.values():
            self.assertEqual(counts, {"ok": 12, "corrupt": 0, "duplicate": 0, "missing": 0,
                                      "count": 12})
        with open(capture, "rb") as f:
            records = f.read()
        self.assertEqual(records.count(b"\nX-Data-Command: DATA\n"), 12)
        self.assertEqual(records.count(b"\nX-Data-Command: BDAT\n"), 24)
        self.assertEqual(records.count(b"\nX-Client-TLS: TLSv1."), 12)


if __name__ == "__main__":
    unittest.main()
