"""smtp_source.py end to end: against Postfix's smtp-sink and against ours,
and the "make demo" script.

With Postfix's sink writing a dump file per message, our source and
Postfix's source must leave the same dumps (dates and ids aside).
"""

import glob
import os
import re
import socket
import subprocess
import sys
import unittest

from tests import support
from tests.fake_smtp import OURS, POSTFIX, run_tool

DEMO = os.path.join(support.ROOT, "bench", "demo.py")
VOLATILE = [
    (re.compile(rb"(Date: |\n\t)[A-Z][a-z][a-z], [ 0-9]\d [A-Z][a-z][a-z] \d{4} [0-9:]{8} "
                rb"[-+]\d{4} \([^)]*\)"), rb"\1<date>"),
    (re.compile(rb"Message-Id: <[0-9a-f]+\."), b"Message-Id: <pid."),
    (re.compile(rb" id [0-9a-f]{8};"), b" id <id>;"),
]


def dumps(directory):
    """The dump files' contents, volatile parts replaced, in name order."""
    contents = []
    for path in sorted(glob.glob(os.path.join(directory, "f.*"))):
        with open(path, "rb") as handle:
            data = handle.read()
        for pattern, replacement in VOLATILE:
            data = pattern.sub(replacement, data)
        contents.append(data)
    return contents


class PostfixSinkTests(support.BothEngines, unittest.TestCase):

    def setUp(self):
        support.need_postfix()

    def sink(self, *args, family=socket.AF_UNIX):
        directory = support.temp_dir(self)
        if family == socket.AF_UNIX:
            address = os.path.join(directory, "sink.sock")
            endpoint = "unix:" + address
        else:
            address = ("::1", support.free_port(socket.AF_INET6))
            endpoint = "[::1]:%d" % address[1]
        dump_dir = os.path.join(directory, "dumps")
        cmd = [support.POSTFIX_SINK] + support.PRIVS + list(args) + [
            "-d", os.path.join(dump_dir, "f."), endpoint, "64"]
        server = support.Server(cmd, address, family).start(self)
        return server, endpoint, dump_dir

    def test_same_dumps_as_postfix_source(self):
        results = {}
        for tool in (POSTFIX, OURS):
            server, endpoint, dump_dir = self.sink("-c")
            result = run_tool(tool, ["-c", "-m", "2", "-r", "2", "-M", "client.example",
                                     "-S", "hello", endpoint])
            rc, sink_out, _ = server.stop()
            results[tool] = (result.rc, result.stdout, dumps(dump_dir))
        self.assertEqual(results[OURS], results[POSTFIX])
        rc, stdout, files = results[OURS]
        self.assertEqual((rc, stdout, len(files)), (0, b"1\r2\r\n", 2))
        self.assertIn(b"X-Rcpt-Args: <2foo@client.example>\nX-Rcpt-Args: <foo@client.example>\n",
                      files[0])
        self.assertIn(b"\nSubject: hello\n\nLa de da de da 1.\n", files[0])

    def test_lmtp_over_ipv6(self):
        server, endpoint, dump_dir = self.sink("-L", family=socket.AF_INET6)
        result = run_tool(OURS, ["-L", "-r", "3", "-M", "client.example", endpoint])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        server.stop()
        (record,) = dumps(dump_dir)
        self.assertTrue(record.startswith(
            b"X-Client-Addr: ipv6:::1\nX-Client-Proto: LMTP\nX-Helo-Args: client.example\n"
            b"X-Mail-Args: <foo@client.example>\nX-Rcpt-Args: <3foo@client.example>\n"
            b"X-Rcpt-Args: <2foo@client.example>\nX-Rcpt-Args: <foo@client.example>\n"),
            record)

    def test_sink_closing_at_mail(self):
        server, endpoint, _ = self.sink("-Q", "mail")
        result = run_tool(OURS, ["-M", "client.example", endpoint])
        self.assertEqual((result.rc, result.stderr), (1, b"smtp-source: fatal: sender rejected: "
                                                      b"421 4.0.0 Server closing connection\n"))

    def test_sink_hanging_up_at_connect(self):
        server, endpoint, _ = self.sink("-q", "connect")
        result = run_tool(OURS, ["-M", "client.example", endpoint])
        self.assertEqual((result.rc, result.stderr), (1, b"smtp-source: fatal: lost connection "
                                                      b"while reading server greeting\n"))

    def test_many_messages(self):
        server, endpoint, dump_dir = self.sink()
        result = run_tool(OURS, ["-c", "-s", "5", "-m", "200", "-d", "-l", "3000", endpoint])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertTrue(result.stdout.endswith(b"\r200\r\n"))
        server.stop()
        self.assertEqual(len(dumps(dump_dir)), 200)


class OurSinkTests(support.BothEngines, unittest.TestCase):

    def setUp(self):
        if not os.path.exists(support.SINK):
            support.loud_skip("smtp_sink.py")

    def test_counters_agree(self):
        port = support.free_port()
        endpoint = "127.0.0.1:%d" % port
        server = support.Server(support.python_cmd(support.SINK, "-c", *support.PRIVS)
                                + [endpoint, "64"], ("127.0.0.1", port), socket.AF_INET)
        server.start(self)
        result = run_tool(OURS, ["-c", "-s", "4", "-m", "40", "-r", "2", endpoint])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertEqual(result.stdout, b"".join(b"%d\r" % n for n in range(1, 41)) + b"\n")
        rc, sink_out, _ = server.stop()
        self.assertTrue(sink_out.endswith(b"\rsess=40 quit=40 mesg=40\r"), sink_out[-60:])


class DemoTests(support.BothEngines, unittest.TestCase):

    def setUp(self):
        if not os.path.exists(support.SINK):
            support.loud_skip("smtp_sink.py")

    def test_demo(self):
        result = support.run([sys.executable, DEMO, "-s", "2", "-m", "30"], timeout=60)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        out = result.stdout
        self.assertIn(b"29\r30\r\n", out)
        self.assertRegex(out, rb"\n30 messages in [0-9.]+ s: [0-9]+ messages/s\n")
        self.assertRegex(out, rb"sink counters: sess=30 quit=30 mesg=30\n")
        pid = int(re.search(rb"\(pid (\d+)\)", out).group(1))
        with self.assertRaises(ProcessLookupError):      # the sink was stopped
            os.kill(pid, 0)


if __name__ == "__main__":
    unittest.main()
