"""smtp_source.main() called in-process: exit status, output, clean-up,
socket options, timeouts.

main() takes the arguments without the program name and returns the exit
status; nothing runs at import time.  These tests capture stdout/stderr,
and check that a run leaves no descriptor or connection behind, also when
it ends in a fatal error.
"""

import contextlib
import errno
import io
import os
import socket
import struct
import sys
import threading
import time
import unittest
from unittest import mock

import smtp_source
from tests import support
from tests.fake_smtp import SILENCE, Close, FakeServer, seq

M = ["-M", "client.example"]


def open_fds():
    return sorted(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


class MainCase(support.BothEngines, unittest.TestCase):

    def main(self, args, server=None):
        """Run main(args) with TARGET filled in; returns (status, stdout, stderr)."""
        if server is not None:
            args = [server.target if a == "TARGET" else a for a in args]
        out = io.TextIOWrapper(io.BytesIO(), write_through=True)
        err = io.TextIOWrapper(io.BytesIO(), write_through=True)
        with mock.patch.object(sys, "argv", ["smtp_source.py"]), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = smtp_source.main(support.engine_args() + args)
        return status, out.buffer.getvalue(), err.buffer.getvalue()


class MainTests(MainCase):

    def test_success(self):
        server = FakeServer().start(self)
        before = open_fds()
        status, out, err = self.main(M + ["-c", "-m", "3", "-s", "2", "TARGET"], server)
        self.assertEqual((status, out, err), (0, b"1\r2\r3\r\n", b""))
        self.assertEqual(len(server.settle()), 3)
        self.assertEqual(open_fds(), before)

    def test_fatal_cleans_up(self):
        # The third MAIL gets a 421; the other sessions are cut off, and
        # every connection ends with a reset, none with QUIT after it.
        server = FakeServer({"mail": seq(b"250 ok\r\n", Close(b"421 4.3.2 bye\r\n"))}).start(self)
        before = open_fds()
        status, out, err = self.main(M + ["-s", "3", "-m", "20", "-d", "TARGET"], server)
        self.assertEqual((status, out, err),
                         (1, b"", b"smtp-source: fatal: sender rejected: 421 4.3.2 bye\n"))
        connections = server.settle()
        self.assertEqual(open_fds(), before)
        self.assertTrue(connections)
        for conn in connections:
            self.assertIn(conn.end, ("server", "reset"))
            self.assertNotIn(b"QUIT\r\n", conn.commands())

    def test_usage_error(self):
        status, out, err = self.main([])
        self.assertEqual((status, out), (1, b""))
        self.assertTrue(err.startswith(b"smtp-source: fatal: usage: smtp-source -cdLNov"))

    def test_argv_default(self):
        with mock.patch.object(sys, "argv", ["smtp_source.py", "-s", "0", "x"]), \
                contextlib.redirect_stderr(io.TextIOWrapper(io.BytesIO())) as err:
            self.assertEqual(smtp_source.main(), 1)
            err.flush()
            self.assertEqual(err.buffer.getvalue(), b"smtp-source: fatal: bad session count: 0\n")

    def test_parse_options(self):
        from smtpcore import messages
        msg = messages.Messages("smtp-source", io.BytesIO())
        opts = smtp_source.parse_options(["-46AcC", "2", "-d", "-f", "a@b", "-L", "-m", "3",
                                          "-N", "-o", "-r", "4", "-s", "5", "-S", "s",
                                          "-t", "c@d", "-T", "4096", "-vv", "-w", "1",
                                          "host:25"], msg)
        self.assertEqual((opts.family, opts.allow_reject, opts.count, opts.connect_count),
                         ("6", True, True, 2))
        self.assertEqual((opts.disconnect, opts.sender, opts.lmtp, opts.messages),
                         (False, b"a@b", True, 3))
        self.assertEqual((opts.number_rcpts, opts.send_helo, opts.send_headers),
                         (True, False, False))
        self.assertEqual((opts.recipients, opts.sessions, opts.subject, opts.recipient),
                         (4, 5, b"s", b"c@d"))
        self.assertEqual((opts.window, opts.verbose, opts.fixed_delay, opts.endpoint),
                         (4096, 2, 1, "host:25"))


class SocketOptionTests(MainCase):
    """What Postfix's tool sets on every socket, seen through setsockopt()."""

    def run_recording(self, args, family="inet"):
        calls = []

        class RecordingSocket(socket.socket):
            def setsockopt(self, level, option, value, *rest):
                calls.append((self.family, level, option, value))
                return super().setsockopt(level, option, value, *rest)

        server = FakeServer(family=family).start(self)
        with mock.patch.object(smtp_source.socket, "socket", RecordingSocket):
            status, _, err = self.main(M + args + ["TARGET"], server)
        self.assertEqual((status, err), (0, b""))
        return [(level, option, value) for fam, level, option, value in calls
                if fam != socket.AF_INET or family == "inet"]

    def test_tcp(self):
        calls = self.run_recording(["-T", "4096"])
        sol = socket.SOL_SOCKET
        self.assertEqual(calls[:4], [
            (sol, socket.SO_LINGER, struct.pack("ii", 1, 0)),
            (sol, socket.SO_SNDBUF, 4096), (sol, socket.SO_RCVBUF, 4096),
            (sol, socket.SO_KEEPALIVE, 1)])

    def test_unix(self):
        calls = self.run_recording(["-m", "2"], family="unix")
        options = [option for _, option, _ in calls]
        self.assertEqual(options.count(socket.SO_LINGER), 2)
        self.assertNotIn(socket.SO_KEEPALIVE, options)


class ConnectRetryTests(MainCase):
    """-C: a refused connection attempt is tried again (a server whose
    listen queue is full may answer SYN with RST).  Attempts number
    `failing` fail as if refused."""

    def run_failing(self, args, failing):
        attempts = []

        class FlakySocket(socket.socket):
            def connect_ex(self, address):
                attempts.append(address)
                if len(attempts) in failing:
                    return errno.ECONNREFUSED
                return super().connect_ex(address)

        server = FakeServer().start(self)
        with mock.patch.object(smtp_source.socket, "socket", FlakySocket):
            status, _, err = self.main(M + args + ["TARGET"], server)
        return status, err, server.settle()

    def test_retry_succeeds(self):
        status, err, connections = self.run_failing(["-C", "3"], {1, 2})
        self.assertEqual((status, err), (0, 2 * b"smtp-source: warning: connect: "
                                         b"Connection refused\n"))
        self.assertEqual(len(connections), 1)
        self.assertEqual(connections[0].commands()[-1], b"QUIT\r\n")

    def test_tries_are_counted_over_the_session(self):
        # Postfix never resets the count: the second failure of the session
        # is fatal, although the first connection went well.
        status, err, connections = self.run_failing(["-C", "2", "-m", "2"], {1, 3})
        self.assertEqual((status, err), (1, b"smtp-source: warning: connect: Connection refused\n"
                                         b"smtp-source: fatal: connect: Connection refused\n"))
        self.assertEqual(len(connections), 1)


class TimeoutTests(MainCase):

    def test_reply_that_stops_half_way(self):
        # Once a reply has begun, each read may take 300 s (here 1 s).
        server = FakeServer({"mail": b"250-partial\r\n"}).start(self)
        with mock.patch.object(smtp_source, "IO_TIMEOUT", struct.pack("ll", 1, 0)):
            status, _, err = self.main(M + ["-v", "TARGET"], server)
        self.assertEqual(status, 1)
        self.assertTrue(err.endswith(b"smtp-source: MAIL FROM:<foo@client.example>\n"
                                     b"smtp-source: <<< 250-partial\n"
                                     b"smtp-source: smtp_get: timeout\n"
                                     b"smtp-source: fatal: timeout while sending sender\n"), err)


    def test_silent_server_is_waited_for(self):
        # As in Postfix, the wait for a reply to begin has no time limit:
        # with a 1 s read limit, the session still waits when the server
        # hangs up 2 s later.
        server = FakeServer({"mail": SILENCE}).start(self)
        hang_up = threading.Timer(2.0, server.stop)
        hang_up.start()
        self.addCleanup(hang_up.join, support.TIMEOUT)
        started = time.monotonic()
        with mock.patch.object(smtp_source, "IO_TIMEOUT", struct.pack("ll", 1, 0)):
            status, _, err = self.main(M + ["TARGET"], server)
        self.assertEqual((status, err),
                         (1, b"smtp-source: fatal: lost connection while sending sender\n"))
        self.assertGreaterEqual(time.monotonic() - started, 1.9)


class MessageTests(unittest.TestCase):
    """The message bytes, made once."""

    def options(self, *args):
        from smtpcore import messages
        opts = smtp_source.parse_options(list(args) + ["x"], messages.Messages("t", io.BytesIO()))
        opts.myhostname = b"h.example"
        opts.sender = opts.sender or b"foo@h.example"
        opts.recipient = opts.recipient or b"foo@h.example"
        return opts

    def test_message_id_fields(self):
        content = smtp_source.Content(self.options("-S", "s"), 0x2bf)
        message = content.message(5, -1)
        self.assertIn(b"\r\nMessage-Id: <02bf.0005.ffffffff@h.example>\r\nSubject: s\r\n\r\n",
                      message)
        self.assertIn(b"<12345.10000.12345@", content.__class__(
            self.options(), 0x12345).message(0x10000, 0x12345))

    def test_body_shapes(self):
        self.assertEqual(smtp_source.length_body(160), b"1" + b"X" * 77 + b"\r\n" + b"X" * 80)
        self.assertEqual(smtp_source.file_body(b""), b"")
        self.assertEqual(smtp_source.file_body(b".a\nb"), b"..a\r\nb\r\n")


if __name__ == "__main__":
    unittest.main()
