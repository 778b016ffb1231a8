"""The sink's timing options over real sockets: -w, -W (with odds), -A, -H,
-t, and the session limit -m.

Delays are whole seconds, so these tests take a few seconds each; lower
bounds are checked exactly, upper bounds generously (the machine is shared).
"""

import random
import socket
import threading
import time
import unittest

from tests import support
from tests.support import InProcessSink, Wait

SLACK = 5.0     # upper bound on scheduling noise, seconds


class Client:
    """A line-at-a-time client that timestamps what it receives."""

    def __init__(self, test, sink):
        self.sock = support.connect(sink.address, sink.family)
        test.addCleanup(self.sock.close)
        self.buf = b""
        self.t0 = time.monotonic()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self, timeout=support.TIMEOUT):
        """The next reply line (without CRLF) and when it arrived; b"" at EOF."""
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:    # closed with our bytes unread
                chunk = b""
            if not chunk:
                return b"", time.monotonic() - self.t0
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line, time.monotonic() - self.t0

    def expect(self, prefix):
        line, when = self.reply()
        if not line.startswith(prefix):
            raise AssertionError("expected %r, got %r" % (prefix, line))
        return when

    def eof(self, timeout=support.TIMEOUT):
        line, when = self.reply(timeout)
        if line != b"":
            raise AssertionError("expected the connection to close, got %r" % line)
        return when


class DataDelayTest(support.BothEngines, unittest.TestCase):
    """-w delay: the 354 comes delay seconds late (same as -W data:delay)."""

    def transaction_to_data(self, args):
        sink = InProcessSink(self, args)
        c = Client(self, sink)
        c.expect(b"220")
        c.send(b"HELO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\n")
        for prefix in (b"250", b"250", b"250"):
            c.expect(prefix)
        start = time.monotonic() - c.t0
        c.send(b"DATA\r\n")
        return c, c.expect(b"354") - start

    def test_w_delays_data_reply(self):
        c, waited = self.transaction_to_data(["-w", "1"])
        self.assertGreaterEqual(waited, 0.99)
        self.assertLess(waited, 1 + SLACK)
        c.send(b"x\r\n.\r\n")
        c.expect(b"250 2.0.0 Ok")

    def test_later_option_wins(self):
        _, waited = self.transaction_to_data(["-W", "data:2", "-w", "1"])
        self.assertGreaterEqual(waited, 0.99)
        self.assertLess(waited, 2)
        _, waited = self.transaction_to_data(["-w", "2", "-W", "data:1"])
        self.assertGreaterEqual(waited, 0.99)
        self.assertLess(waited, 2)

    def test_q_data_wins_over_delay(self):
        sink = InProcessSink(self, ["-w", "2", "-q", "data"])
        c = Client(self, sink)
        c.expect(b"220")
        c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n")
        c.expect(b"250")
        c.expect(b"250")
        self.assertLess(c.eof(), 1.9)


class CommandDelayTest(support.BothEngines, unittest.TestCase):
    """-W command:delay[:odds]."""

    def test_rcpt_delay_keeps_replies_in_order(self):
        sink = InProcessSink(self, ["-W", "rcpt:1"])
        c = Client(self, sink)
        c.expect(b"220")
        sent = time.monotonic() - c.t0
        c.send(b"NOOP\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nNOOP\r\n")
        self.assertLess(c.expect(b"250 2.0.0") - sent, 0.9)
        self.assertLess(c.expect(b"250 2.1.0") - sent, 0.9)
        self.assertGreaterEqual(c.expect(b"250 2.1.5") - sent, 0.99)
        c.expect(b"250 2.0.0")      # the NOOP after it: after, never before

    def test_connect_delay(self):
        sink = InProcessSink(self, ["-W", "connect:1"])
        c = Client(self, sink)
        self.assertGreaterEqual(c.expect(b"220 smtp-sink ESMTP"), 0.99)

    def test_reject_is_not_delayed(self):
        sink = InProcessSink(self, ["-W", "rcpt:2", "-f", "rcpt"])
        c = Client(self, sink)
        c.expect(b"220")
        c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\n")
        c.expect(b"250")
        self.assertLess(c.expect(b"500 5.3.0 Error: command failed"), 1.9)

    def test_dot_delay(self):
        sink = InProcessSink(self, ["-W", ".:1"])
        c = Client(self, sink)
        c.expect(b"220")
        c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n")
        for prefix in (b"250", b"250", b"354"):
            c.expect(prefix)
        sent = time.monotonic() - c.t0
        c.send(b"body\r\n.\r\n")
        self.assertGreaterEqual(c.expect(b"250 2.0.0 Ok") - sent, 0.99)

    def test_odds_multiply_the_delay(self):
        """With odds, each delay is k * delay, k = how many die throws (0..99)
        come out below odds before one does not."""
        seed, odds, count = 13, 50, 6
        roller = random.Random("%d:0" % seed)   # session 0's stream (see --seed)
        expected = []
        for _ in range(count):
            k = 0
            while roller.randrange(100) < odds:
                k += 1
            expected.append(k)
        sink = InProcessSink(self, ["--seed=%d" % seed, "-W", "rcpt:1:%d" % odds])
        c = Client(self, sink)
        c.expect(b"220")
        c.send(b"MAIL FROM:<a>\r\n")
        c.expect(b"250")
        for k in expected:
            sent = time.monotonic() - c.t0
            c.send(b"RCPT TO:<b>\r\n")
            waited = c.expect(b"250 2.1.5") - sent
            self.assertGreaterEqual(waited, k - 0.01)
            self.assertLess(waited, k + 0.9)
        self.assertNotEqual(set(expected), {1}, "the seed should exercise odds")

    def test_odds_zero_is_a_fixed_delay(self):
        sink = InProcessSink(self, ["-W", "noop:1:0"])
        c = Client(self, sink)
        c.expect(b"220")
        sent = time.monotonic() - c.t0
        c.send(b"NOOP\r\n")
        self.assertGreaterEqual(c.expect(b"250") - sent, 0.99)


class AbortTest(support.BothEngines, unittest.TestCase):
    """-A delay: 354, then after delay seconds "550 This violates SMTP" and close."""

    def test_abort_after_delay(self):
        sink = InProcessSink(self, ["-A", "1", "-c"])
        c = Client(self, sink)
        c.expect(b"220")
        c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n")
        c.expect(b"250")
        c.expect(b"250")
        got_354 = c.expect(b"354")
        c.send(b"some data\r\n")
        self.assertGreaterEqual(c.expect(b"550 This violates SMTP") - got_354, 0.99)
        c.eof()
        support.wait_until(lambda: sink.stdout(), what="-c output")
        self.assertEqual(sink.stdout(), b"sess=1 quit=0 mesg=0\r")

    def test_abort_at_once_answers_nothing_after_DATA(self):
        # -A 0 with more bytes after DATA in the same write: none of them is
        # answered (Postfix answers them as commands until its abort timer
        # fires, and crashes on this NOOP and QUIT: a documented difference).
        sink = InProcessSink(self, ["-A", "0"])
        data, _ = sink.converse([b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nNOOP\r\nQUIT\r\n"])
        self.assertEqual(data, b"220 smtp-sink ESMTP\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                               b"354 End data with <CR><LF>.<CR><LF>\r\n"
                               b"550 This violates SMTP\r\n")


class ReadDelayTest(support.BothEngines, unittest.TestCase):
    """-H delay: input is not read for delay seconds after the 354."""

    def test_end_of_data_reply_waits(self):
        sink = InProcessSink(self, ["-H", "1"])
        c = Client(self, sink)
        c.expect(b"220")
        sent = time.monotonic() - c.t0
        c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nbody\r\n.\r\n")
        for prefix in (b"250", b"250", b"354"):
            c.expect(prefix)
        self.assertGreaterEqual(c.expect(b"250 2.0.0 Ok") - sent, 0.99)

    def test_ignored_with_w(self):
        sink = InProcessSink(self, ["-H", "3", "-w", "1"])
        c = Client(self, sink)
        c.expect(b"220")
        c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\n")
        c.expect(b"250")
        c.expect(b"250")
        sent = time.monotonic() - c.t0
        c.send(b"DATA\r\nbody\r\n.\r\n")
        c.expect(b"354")
        self.assertLess(c.expect(b"250 2.0.0 Ok") - sent, 2.9)


class IdleTimeoutTest(support.BothEngines, unittest.TestCase):
    """-t timeout: a silent client is dropped without a reply; every byte
    received restarts the clock, in command and in DATA mode."""

    def test_idle_client_is_dropped(self):
        sink = InProcessSink(self, ["-t", "1", "-c", "-d", support.temp_dir(self) + "/t."])
        c = Client(self, sink)
        c.expect(b"220")
        c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n")
        for prefix in (b"250", b"250", b"354"):
            c.expect(prefix)
        start = time.monotonic() - c.t0
        closed = c.eof()
        self.assertGreaterEqual(closed - start, 0.95)
        self.assertLess(closed - start, 1 + SLACK)
        self.assertIn(b"smtp-sink: warning: read timeout\n", sink.stderr())
        support.wait_until(lambda: sink.stdout(), what="-c output")
        self.assertEqual(sink.stdout(), b"sess=1 quit=0 mesg=0\r")

    def test_trickle_keeps_session(self):
        sink = InProcessSink(self, ["-t", "1"])
        c = Client(self, sink)
        c.expect(b"220")
        pace = threading.Event()            # never set: paces the client
        for byte in b"NOOP\r\n":
            pace.wait(0.4)
            c.send(bytes([byte]))
        # 2.4 s in all, more than twice the timeout: still answered.
        self.assertGreaterEqual(c.expect(b"250 2.0.0 Ok"), 2.0)


class SessionLimitTest(support.BothEngines, unittest.TestCase):
    """-m count: more clients wait in the listen queue, not accepted."""

    def test_excess_client_waits_for_a_slot(self):
        sink = InProcessSink(self, ["-m", "1"])
        first = Client(self, sink)
        first.expect(b"220")
        second = Client(self, sink)         # connected: the kernel queued it
        second.send(b"NOOP\r\n")
        with self.assertRaises(socket.timeout):
            second.reply(timeout=0.5)
        first.send(b"QUIT\r\n")
        first.expect(b"221")
        second.expect(b"220")
        second.expect(b"250 2.0.0 Ok")

    def test_many_clients_all_served(self):
        sink = InProcessSink(self, ["-m", "3", "-c"])
        clients = [Client(self, sink) for _ in range(12)]
        for c in clients:
            c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")
        for c in clients:
            for prefix in (b"220", b"250", b"250", b"354", b"250", b"221"):
                c.expect(prefix)
            c.eof()
        support.wait_until(lambda: sink.stdout().endswith(b"sess=12 quit=12 mesg=12\r"),
                           what="all sessions counted")


class StopTest(support.BothEngines, unittest.TestCase):
    """-M and -n end the process with status 0 (in-process: serve() returns 0)."""

    def test_M_exits_before_replying(self):
        sink = InProcessSink(self, ["-M", "2", "-c"])
        for n in (1, 2):
            c = Client(self, sink)
            c.expect(b"220")
            c.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n")
            for prefix in (b"250", b"250", b"354"):
                c.expect(prefix)
            c.send(b"x\r\n.\r\n")
            if n == 1:
                c.expect(b"250 2.0.0 Ok")
                c.send(b"QUIT\r\n")
                c.expect(b"221")
            else:
                c.eof()
        self.assertEqual(sink.wait(), 0)
        self.assertEqual(sink.stdout(), b"sess=0 quit=0 mesg=1\rsess=1 quit=1 mesg=1\r"
                                        b"sess=1 quit=1 mesg=2\r")

    def test_QUIT_and_its_end_are_counted_together(self):
        """Under threads a session's thread may be held up between its 221
        and the end of its session (as a busy machine does); what other
        sessions count meanwhile must not come between them, as nothing
        can in Postfix's one thread.  -n counts the QUITs; with the end of
        the first session counted late, the -n-th QUIT (the second) once
        ended the program with "sess=1 quit=2", and the -c lines out of
        order."""
        if self.engine == "loop":
            self.skipTest("one thread: a session held up holds up all")
        sink = InProcessSink(self, ["-c", "-n", "2"])
        first_at_its_end, go_on = threading.Event(), threading.Event()
        session_ended = sink.server.session_ended

        def late(session):
            if session.number == 0:         # the first session's thread
                first_at_its_end.set()
                go_on.wait(support.TIMEOUT)
            session_ended(session)
        sink.server.session_ended = late
        first = Client(self, sink)
        first.expect(b"220")
        first.send(b"QUIT\r\n")
        first.expect(b"221")
        self.assertTrue(first_at_its_end.wait(support.TIMEOUT))
        second = Client(self, sink)
        second.expect(b"220")
        second.send(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")
        for prefix in (b"250", b"250", b"354", b"250", b"221"):
            second.expect(prefix)
        second.eof()
        go_on.set()
        self.assertEqual(sink.wait(), 0)
        self.assertEqual(sink.stdout(), b"sess=1 quit=1 mesg=0\rsess=1 quit=1 mesg=1\r"
                                        b"sess=2 quit=2 mesg=1\r")

    def test_M_sends_the_replies_already_due(self):
        # Pipelined up to the last message's end: the replies before it go
        # out, the "." gets none (Postfix drops them all from its buffer: a
        # documented difference).
        sink = InProcessSink(self, ["-M", "1"])
        data, _ = sink.converse([b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nx\r\n.\r\n"])
        self.assertEqual(data, b"220 smtp-sink ESMTP\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                               b"354 End data with <CR><LF>.<CR><LF>\r\n")
        self.assertEqual(sink.wait(), 0)

    def test_M_cuts_other_sessions(self):
        sink = InProcessSink(self, ["-M", "1"])
        idle = Client(self, sink)
        idle.expect(b"220")
        data, _ = sink.converse([b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n", Wait(b"354"),
                                 b"x\r\n.\r\n"])
        self.assertNotIn(b"250 2.0.0", data)
        self.assertEqual(sink.wait(), 0)
        idle.eof()

    def test_n_counts_quits_with_c(self):
        sink = InProcessSink(self, ["-n", "2", "-c"])
        sink.converse([b"NOOP\r\n"])            # no QUIT: does not count
        sink.converse([b"QUIT\r\n"])
        data, _ = sink.converse([b"QUIT\r\n"])
        self.assertTrue(data.endswith(b"221 Bye\r\n"))
        self.assertEqual(sink.wait(), 0)
        self.assertEqual(sink.stdout(), b"sess=1 quit=0 mesg=0\rsess=2 quit=1 mesg=0\r"
                                        b"sess=3 quit=2 mesg=0\r")


if __name__ == "__main__":
    unittest.main()
