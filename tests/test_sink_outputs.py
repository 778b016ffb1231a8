"""smtp-sink when its report lines cannot be written (issue 14): -c, the
--stats and --verify lines, on a stdout whose reader has gone (EPIPE) or
on a file at its size limit (EFBIG).  The counters are a report, not the
service: the sink keeps serving and counting, warns once in strerror's
words, never prints a traceback, and a reader of the file only ever sees
whole lines (a line cut short is taken back).

The sink is a subprocess (as root with -u nobody); the size limit is set
with prlimit(1), as a user would.
"""

import json
import os
import re
import unittest

from tests import load, support

TRANSACTION = [b"EHLO client.example\r\n", b"MAIL FROM:<a@example.com>\r\n",
               b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n", b"Subject: s\r\n\r\nbody\r\n.\r\n",
               b"QUIT\r\n"]
SERVED = (b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok\r\n221 Bye\r\n")
BROKEN_PIPE = b"smtp-sink: warning: write stdout: Broken pipe\n"
STDOUT_CLOSED = ["sh", "-c", 'exec "$@" >&-', "sh"]     # + a command: `command >&-`


def gone_stdout(test):
    """The write end of a pipe whose reader has gone (closed in cleanup)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    test.addCleanup(os.close, write_end)
    return write_end


def prefilled(test, size):
    """A file of `size` bytes, opened for appending (closed in cleanup)."""
    path = os.path.join(support.temp_dir(test), "out")
    with open(path, "wb") as f:
        f.write(b"x" * (size - 1) + b"\n")
    handle = open(path, "ab")
    test.addCleanup(handle.close)
    return path, handle


def read(path):
    with open(path, "rb") as f:
        return f.read()


class OutputFaultCase(support.BothEngines, unittest.TestCase):

    maxDiff = None

    def start(self, args, **kw):
        self.sink = load.SinkProcess(self, args, **kw)
        return self.sink

    def serve(self, sessions=2):
        """Whole transactions, each on its own connection, all answered."""
        for _ in range(sessions):
            replies, _ = support.converse(self.sink.address, self.sink.family, TRANSACTION)
            self.assertTrue(replies.endswith(SERVED), replies)
        self.assertTrue(self.sink.alive(), self.sink.stderr())

    def wait_for_stderr(self, what):
        return support.wait_until(lambda: what in self.sink.stderr() or not self.sink.alive(),
                                  what="%r on stderr" % what)

    def size_limit(self, size):
        return [support.need_program("prlimit"), "--fsize=%d" % size]


class StdoutGoneTest(OutputFaultCase):
    """`smtp-sink -c ... | true`: the reader of stdout is gone."""

    def test_counters(self):
        self.start(["-c"], stdout=gone_stdout(self))
        self.serve(3)
        self.assertEqual(self.sink.stop(), -15)
        self.assertEqual(self.sink.stderr(), BROKEN_PIPE)

    def test_counters_with_stdout_closed(self):
        # `smtp-sink -c ... >&-`: descriptor 1 is free when the program
        # starts, and a socket may get it; no line may go there.
        self.start(["-c"], wrapper=STDOUT_CLOSED)
        self.serve(2)
        self.assertEqual(self.sink.stop(), -15)
        self.assertEqual(self.sink.stderr(),
                         b"smtp-sink: warning: write stdout: Bad file descriptor\n")

    def test_help_with_stdout_closed(self):
        result = support.run(STDOUT_CLOSED + support.python_cmd(support.SINK, "--help"))
        self.assertEqual((result.returncode, result.stderr),
                         (0, b"smtp-sink: warning: write stdout: Bad file descriptor\n"))

    def test_counters_of_a_process_group(self):
        # The workers share one warning; each keeps serving.
        self.start(["-c", "--procs=2"], stdout=gone_stdout(self))
        self.serve(6)
        self.assertEqual(self.sink.stop(), -15)
        self.assertEqual(self.sink.stderr(), BROKEN_PIPE)

    def test_counters_and_statistics_lines(self):
        # Lines every 50 ms, the --verify counts and -c: one warning, once.
        self.start(["-c", "--verify", "--stats=0.05"], stdout=gone_stdout(self))
        self.serve(2)
        self.wait_for_stderr(BROKEN_PIPE)
        self.serve(1)
        self.assertEqual(self.sink.stop(), -15)
        self.assertEqual(self.sink.stderr(), BROKEN_PIPE)


class SizeLimitTest(OutputFaultCase):
    """A file-size limit (or a full disk) on the files the lines go to."""

    def test_counters(self):
        # 195 bytes in the file, a limit of 200: a line of -c begins to fit,
        # the rest does not; what began is taken back.
        path, stdout = prefilled(self, 195)
        self.start(["-c"], wrapper=self.size_limit(200), stdout=stdout)
        self.serve(2)
        self.assertEqual(self.sink.stop(), -15)
        self.assertEqual(self.sink.stderr(),
                         b"smtp-sink: warning: write stdout: File too large\n")
        self.assertEqual(read(path), b"x" * 194 + b"\n")

    def test_counters_on_a_full_device(self):
        # /dev/full: every write fails with ENOSPC, as on a full disk.
        with open("/dev/full", "wb") as full:
            self.start(["-c"], stdout=full)
        self.serve(2)
        self.assertEqual(self.sink.stop(), -15)
        self.assertEqual(self.sink.stderr(),
                         b"smtp-sink: warning: write stdout: No space left on device\n")

    def test_statistics_file_full_from_the_start(self):
        # No line fits: every interval fails, and the last one at SIGTERM;
        # the warning comes once, and the file keeps its whole lines.
        path, _ = prefilled(self, 2990)
        self.start(["--stats=0.05," + path], wrapper=self.size_limit(3000))
        self.serve(1)
        warning = b"smtp-sink: warning: write %s: File too large\n" % path.encode()
        self.wait_for_stderr(warning)
        self.assertEqual(self.sink.stop(), -15)
        self.assertEqual(self.sink.stderr(), warning)
        self.assertEqual(read(path), b"x" * 2989 + b"\n")

    def test_statistics_file_works_again(self):
        # Room is made (the file emptied): the lines go on, and the sink
        # says how many were lost; a reader sees whole lines throughout.
        path, _ = prefilled(self, 2990)
        self.start(["--stats=0.05," + path], wrapper=self.size_limit(3000))
        warning = b"smtp-sink: warning: write %s: File too large\n" % path.encode()
        self.wait_for_stderr(warning)
        os.truncate(path, 0)
        again = b"smtp-sink: write %s: works again; records lost: " % path.encode()
        self.wait_for_stderr(again)
        self.serve(1)
        self.assertEqual(self.sink.stop(), -15)
        # Fails and recoveries alternate: no warning is repeated while
        # the lines keep failing.
        self.assertRegex(self.sink.stderr(), b"\\A%s(%s[1-9][0-9]*\n%s)*(%s[1-9][0-9]*\n)?\\Z" % (
            re.escape(warning), re.escape(again), re.escape(warning), re.escape(again)))
        data = read(path)
        self.assertTrue(data.endswith(b"\n"), data[-100:])
        lines = [json.loads(line) for line in data.splitlines()]
        self.assertEqual(lines[0]["event"], "interval")


if __name__ == "__main__":
    unittest.main()
