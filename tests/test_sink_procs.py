"""smtp_sink.py --procs=N: worker processes that count as one, and
--maildir: captures a mail reader can pick up.  Over real sockets, with the
sink as a subprocess (it forks)."""

import json
import os
import re
import signal
import socket
import unittest
from unittest import mock

from tests import support
from tests.support import InProcessSink, Wait

MESSAGE = [b"HELO client.example\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
           b"DATA\r\n", b"Subject: s\r\n\r\n.body\r\n.\r\n", b"QUIT\r\n"]


def children(pid):
    """The pids of a process's children (from /proc)."""
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


class ProcsTest(support.BothEngines, unittest.TestCase):

    def start(self, options, unix=True):
        base = support.temp_dir(self)
        if unix:
            address, family = os.path.join(base, "s.sock"), socket.AF_UNIX
            endpoint = "unix:" + address
        else:
            port = support.free_port()
            address, family = ("127.0.0.1", port), socket.AF_INET
            endpoint = "127.0.0.1:%d" % port
        server = support.Server(support.python_cmd(support.SINK) + support.PRIVS + options
                                + [endpoint, "100"], address, family)
        server.start(self)
        self.base = base
        count = int(options[options.index("--procs") + 1]) if "--procs" in options else 1
        support.wait_until(lambda: len(children(server.proc.pid)) == count,
                           what="%d workers" % count)
        return server

    def source(self, server, *args):
        """Our smtp_source.py against the sink; returns its exit status."""
        address = server.address
        target = "unix:" + address if server.family == socket.AF_UNIX else \
            "127.0.0.1:%d" % address[1]
        return support.run(support.python_cmd(support.SOURCE, *args) + [target],
                           timeout=120).returncode

    def test_counters_add_up_across_workers(self):
        server = self.start(["--procs", "3", "-c"], unix=False)
        self.assertEqual(self.source(server, "-s", "12", "-m", "300", "-r", "2"), 0)
        self.assertEqual(self.source(server, "-s", "6", "-m", "60", "-d"), 0)
        rc, out, err = server.stop()
        lines = out.split(b"\r")
        self.assertEqual(lines[-2], b"sess=306 quit=306 mesg=360")     # then the empty tail
        self.assertEqual(len(lines) - 1, 306 + 360)     # a line per session end and message
        self.assertEqual(err, b"")
        self.assertEqual(rc, -signal.SIGTERM)

    def test_M_stops_the_group_at_the_total(self):
        server = self.start(["--procs", "2", "-c", "-M", "150"])
        self.source(server, "-s", "10", "-m", "400", "-d")      # cut off at 150
        rc, out, err = server.wait()
        self.assertEqual(rc, 0)
        self.assertTrue(out.endswith(b"mesg=150\r"), out[-40:])
        self.assertNotIn(b"mesg=151", out)
        self.assertEqual(err, b"")

    def test_n_stops_the_group(self):
        server = self.start(["--procs", "2", "-c", "-n", "5"])
        for _ in range(5):
            data, _ = support.converse(server.address, server.family, [b"QUIT\r\n"])
            self.assertEqual(data, b"220 smtp-sink ESMTP\r\n221 Bye\r\n")
        rc, out, err = server.wait()
        self.assertEqual(rc, 0)
        self.assertTrue(out.endswith(b"sess=5 quit=5 mesg=0\r"))

    def test_dead_worker_is_reported_and_replaced(self):
        server = self.start(["--procs", "2"])
        parent = server.proc.pid
        victim = children(parent)[0]
        os.kill(victim, signal.SIGKILL)
        support.wait_until(lambda: victim not in children(parent)
                           and len(children(parent)) == 2, what="a new worker")
        data, _ = support.converse(server.address, server.family, MESSAGE)
        self.assertIn(b"250 2.0.0 Ok\r\n221 Bye\r\n", data)
        rc, out, err = server.stop()
        self.assertRegex(err, rb"^smtp-sink: warning: worker [01] \(pid %d\) died with "
                              rb"signal 9; starting another\n$" % victim)

    def test_sigterm_stops_every_worker(self):
        server = self.start(["--procs", "3"])
        workers = children(server.proc.pid)
        idle = support.connect(server.address, server.family)
        self.addCleanup(idle.close)
        self.assertEqual(support.recv_until(idle, b"\r\n"), b"220 smtp-sink ESMTP\r\n")
        rc, out, err = server.stop()            # SIGTERM, as Postfix: killed by it
        self.assertEqual(rc, -signal.SIGTERM)
        for pid in workers:                     # reaped by the parent
            self.assertFalse(os.path.exists("/proc/%d" % pid), "worker %d is left" % pid)
        self.assertEqual(support.recv_all(idle), b"")   # cut off

    def test_stats_and_verify_count_across_workers(self):
        stats = os.path.join(support.temp_dir(self), "stats")
        server = self.start(["--procs", "2", "--verify", "--stats", "0," + stats])
        self.assertEqual(self.source(server, "--integrity", "-s", "8", "-m", "80", "-r", "3"), 0)
        # One message again (a duplicate), whichever worker takes it.
        from smtpcore import integrity
        run = b"0123456789abcdef"
        body = b"Subject: x\r\n\r\nhello\r\n"
        message = integrity.header(run, 0, 2, body) + body
        for _ in range(2):
            support.converse(server.address, server.family,
                             [b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n", Wait(b"354"),
                              message + b".\r\n", b"QUIT\r\n"])
        rc, out, err = server.stop()
        with open(stats) as f:
            last = json.loads(f.read().splitlines()[-1])
        self.assertEqual(last["event"], "exit")
        self.assertEqual(last["messages"], 82)
        self.assertEqual(last["recipients"], 242)
        runs = last["verify"]["runs"]
        self.assertEqual(runs.pop("0123456789abcdef"),
                         {"ok": 1, "corrupt": 0, "duplicate": 1, "missing": 1, "count": 2})
        [theirs] = runs.values()
        self.assertEqual(theirs, {"ok": 80, "corrupt": 0, "duplicate": 0, "missing": 0,
                                  "count": 80})

    def test_bad_procs_values(self):
        for value in ("0", "x", "-1", "257", ""):
            result = support.run(support.python_cmd(support.SINK) + support.PRIVS
                                 + ["--procs=" + value, "127.0.0.1:0", "5"])
            self.assertEqual(result.returncode, 1)
            self.assertEqual(result.stderr, b"smtp-sink: fatal: bad --procs value: %s\n"
                             % value.encode())


class MaildirTest(support.BothEngines, unittest.TestCase):
    """--maildir=DIR: each message as a Maildir file, renamed into new/
    before its 250; the same record as -d."""

    def test_same_record_as_d(self):
        top = support.temp_dir(self)
        maildir = InProcessSink(self, ["--maildir", os.path.join(top, "md"), "--seed", "7"])
        single = InProcessSink(self, ["-d", os.path.join(top, "d."), "--seed", "7"])
        maildir.converse(MESSAGE)
        single.converse(MESSAGE)
        new = os.path.join(top, "md", "new")
        [name] = os.listdir(new)
        self.assertRegex(name, r"^\d+\.M\d+P%dQ\d+\.[^/:]+$" % os.getpid())
        self.assertEqual(os.listdir(os.path.join(top, "md", "tmp")), [])
        self.assertEqual(os.listdir(os.path.join(top, "md", "cur")), [])
        [dumped] = [f for f in os.listdir(top) if f.startswith("d.")]
        with open(os.path.join(new, name), "rb") as f, open(os.path.join(top, dumped), "rb") as g:
            strip = lambda record: re.sub(rb"\n\t[^\n]+\n", b"\n\tDATE\n", record)
            self.assertEqual(strip(f.read()), strip(g.read()))

    def test_aborted_transactions_leave_nothing(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["--maildir", top])
        sink.converse(MESSAGE[:4] + [b"cut off\r\n"])
        sink.converse(MESSAGE[:3] + [b"RSET\r\n", b"QUIT\r\n"])
        for sub in ("tmp", "new", "cur"):
            self.assertEqual(os.listdir(os.path.join(top, sub)), [])

    def test_no_250_before_the_rename(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["--maildir", top])
        with mock.patch("os.rename", side_effect=OSError(28, "No space left on device")):
            data, _ = sink.converse(MESSAGE)
        self.assertIn(b"354 End data with <CR><LF>.<CR><LF>\r\n"
                      b"451 4.3.0 Error: capture file unavailable\r\n221 Bye\r\n", data)
        self.assertIn(b"warning: append file", sink.stderr())
        for sub in ("tmp", "new"):
            self.assertEqual(os.listdir(os.path.join(top, sub)), [])

    def test_with_d_is_refused(self):
        result = support.run(support.python_cmd(support.SINK) + support.PRIVS
                             + ["--maildir", "/tmp/x", "-d", "y.", "127.0.0.1:0", "5"])
        self.assertEqual((result.returncode, result.stderr),
                         (1, b"smtp-sink: fatal: use only one of -d, -D and --maildir\n"))


if __name__ == "__main__":
    unittest.main()
