"""smtp_source.py against a server we did not write: aiosmtpd, in SMTP and
LMTP, over IPv4, IPv6 and a UNIX socket.  (Postfix's smtp-sink, the other
such server, is in test_interop_matrix.)

aiosmtpd runs as a subprocess, tests/aiosmtpd_peer.py under the Python of
.venv-peers/ (made by .ci/run; $AIOSMTPD_PYTHON overrides), and prints
every message it takes.  Each test runs the loads of interop.MODES (a
connection per message, -d, -r 20, -l 100000) at once, and every message
must arrive exactly once, with its envelope and content as sent.
Postfix's smtp-source, where installed, runs the same loads alongside as a
control: when only ours fails, the fault is ours.
"""

import collections
import json
import os
import re
import unittest
from concurrent import futures

from tests import interop, support
from tests.interop import MODES, Peer, helo_name, source_cmd

PEER = os.path.join(support.ROOT, "tests", "aiosmtpd_peer.py")


class AiosmtpdTest(support.BothEngines, unittest.TestCase):

    def setUp(self):
        self.python = support.aiosmtpd_python()
        if self.python is None:
            support.loud_skip("aiosmtpd (.venv-peers/, which .ci/run makes)")

    def run_loads(self, transport, protocol):
        where = interop.endpoint(self, transport)
        if transport == "unix":
            listen = ["unix", where.address]
        else:
            listen = [where.address[0], str(where.address[1])]
        peer = Peer(self, [self.python, PEER, protocol] + listen, where)
        sources = ["ours"]
        if os.access(support.POSTFIX_SOURCE, os.X_OK):
            sources.append("postfix")
        lmtp = ["-L"] if protocol == "lmtp" else []

        # 1. Every load of every source at once; each counts all its messages.
        with futures.ThreadPoolExecutor(len(MODES) * len(sources)) as pool:
            jobs = {(source, mode.name): pool.submit(support.run, source_cmd(source) + lmtp + [
                "-c", "-M", helo_name(mode, source), "-m", str(mode.messages)] + mode.flags
                + [where.text]) for source in sources for mode in MODES}
            results = {key: job.result() for key, job in jobs.items()}
        for source in sources:
            for mode in MODES:
                result = results[source, mode.name]
                self.assertEqual((result.returncode, result.stderr, result.stdout),
                                 (0, b"", interop.counter_lines(mode.messages)),
                                 "%s smtp-source, %s" % (source, mode.name))

        # 2. aiosmtpd recorded each message before its reply went out.
        rc, out, err = peer.stop()
        self.assertEqual((rc, err), (0, b""))
        taken = collections.defaultdict(list)
        for line in out.splitlines():
            message = json.loads(line.decode("ascii"))
            taken[message["helo"]].append(message)
        self.assertEqual({helo: len(group) for helo, group in taken.items()},
                         {helo_name(mode, source): mode.messages
                          for source in sources for mode in MODES})
        for source in sources:
            for mode in MODES:
                with self.subTest(source=source, mode=mode.name):
                    for message in taken[helo_name(mode, source)]:
                        self.check_message(message, helo_name(mode, source), mode)

    def check_message(self, message, helo, mode):
        recipients = [rcpt.decode().strip("<>")
                      for rcpt in interop.source_recipients(mode.recipients, helo.encode())]
        content = message["content"].encode("latin-1")
        headers, _, body = content.partition(b"\r\n\r\n")
        self.assertEqual((message["mail"], message["rcpts"], body),
                         ("foo@" + helo, recipients, mode.body.replace(b"\n", b"\r\n")))
        host = re.escape(helo.encode())
        self.assertRegex(headers, rb"\AFrom: <foo@%s>\r\nTo: <foo@%s>\r\nDate: %s\r\n"
                         rb"Message-Id: <[0-9a-f]{4,}\.[0-9a-f]{4,}\.[0-9a-f]{4,}@%s>\Z"
                         % (host, host, interop.DATE, host))

    def test_smtp_over_ipv4(self):
        self.run_loads("ipv4", "smtp")

    def test_smtp_over_ipv6(self):
        self.run_loads("ipv6", "smtp")

    def test_smtp_over_unix_socket(self):
        self.run_loads("unix", "smtp")

    def test_lmtp_over_ipv4(self):
        self.run_loads("ipv4", "lmtp")

    def test_lmtp_over_ipv6(self):
        self.run_loads("ipv6", "lmtp")

    def test_lmtp_over_unix_socket(self):
        self.run_loads("unix", "lmtp")


if __name__ == "__main__":
    unittest.main()
