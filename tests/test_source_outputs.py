"""smtp_source.py when its -c count or --report cannot be written (issue
14): on a stdout whose reader has gone (EPIPE) or on a file at its size
limit (EFBIG), the messages still go out, the program warns once in
strerror's words, and the file holds whole records only -- never part of
a report.  (Postfix's smtp-source says nothing on EPIPE and is killed by
SIGXFSZ at a size limit.)
"""

import subprocess
import unittest

from tests import support
from tests.fake_smtp import FakeServer
from tests.test_sink_outputs import STDOUT_CLOSED, gone_stdout, prefilled, read

M = ["-M", "client.example"]


class SourceOutputTest(support.BothEngines, unittest.TestCase):

    maxDiff = None

    def source(self, args, stdout, wrapper=()):
        """Run our smtp-source against a fake server; (status, stderr,
        messages the server got)."""
        server = FakeServer().start(self)
        command = list(wrapper) + support.python_cmd(support.SOURCE, *M) + list(args) + [
            server.target]
        proc = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        try:
            _, stderr = proc.communicate(timeout=support.TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        messages = sum(len(conn.messages()) for conn in server.settle())
        return proc.returncode, stderr, messages

    def test_count_with_stdout_gone(self):
        self.assertEqual(self.source(["-c", "-s", "2", "-m", "20"], gone_stdout(self)),
                         (0, b"smtp-source: warning: write stdout: Broken pipe\n", 20))

    def test_count_of_a_process_group_with_stdout_gone(self):
        self.assertEqual(self.source(["-c", "--procs=2", "-s", "2", "-m", "20"],
                                     gone_stdout(self)),
                         (0, b"smtp-source: warning: write stdout: Broken pipe\n", 20))

    def test_report_with_stdout_gone(self):
        self.assertEqual(self.source(["--report=json", "-m", "3"], gone_stdout(self)),
                         (0, b"smtp-source: warning: write stdout: Broken pipe\n", 3))

    def test_help_with_stdout_closed(self):
        result = support.run(STDOUT_CLOSED + support.python_cmd(support.SOURCE, "--help"))
        self.assertEqual((result.returncode, result.stderr),
                         (0, b"smtp-source: warning: write stdout: Bad file descriptor\n"))

    def test_report_at_a_size_limit(self):
        # Room for ten bytes: the counts ("1\r2\r3\r") and the newline that
        # ends them fit, the report does not -- none of it is left.
        path, stdout = prefilled(self, 100)
        limit = [support.need_program("prlimit"), "--fsize=110"]
        self.assertEqual(self.source(["-c", "--report=json", "-m", "3"], stdout, limit),
                         (0, b"smtp-source: warning: write stdout: File too large\n", 3))
        self.assertEqual(read(path), b"x" * 99 + b"\n1\r2\r3\r\n")


if __name__ == "__main__":
    unittest.main()
