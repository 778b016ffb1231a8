"""Clients we did not write delivering to smtp_sink.py: Python's smtplib
(SMTP over IPv4 and IPv6, LMTP over a UNIX socket; this Python's, and every
other Python 3.8+ found here) and swaks (plain, --pipeline, LMTP with
several recipients).

The sink runs in a thread of the test process with -c and a -D capture
file; each captured record is checked field by field (client address,
protocol, HELO, envelope with its ESMTP parameters, Received:, headers, and
the body with its dots undoubled), and the counters must show every
session and message.  The smtplib session also runs against Postfix's
smtp-sink, whose capture must be the same.
"""

import email.parser
import email.policy
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import unittest

from tests import interop, smtplib_client, support
from tests.interop import Peer
from tests.support import InProcessSink

CLIENT = os.path.join(support.ROOT, "tests", "smtplib_client.py")
PYTHONS = ["3.%d" % minor for minor in range(8, 14)]
SMTP_RESULT = {"sent": [{}, {}, {}], "more": [], "quit": [221, "Bye"]}
LMTP_RESULT = {"sent": [{}, {}], "more": [[250, "2.2.0 Ok"], [250, "2.2.0 Ok"]],
               "quit": [221, "Bye"]}


def find_python(version):
    """An interpreter of that version: pythonX.Y on PATH, or pyenv's."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which("python" + version)] + sorted(
        glob.glob(os.path.join(root, "versions", version + ".*", "bin", "python" + version)))
    for python in candidates:
        if python and subprocess.run(
                [python, "-c", "import sys; sys.exit(sys.version_info[:2] != (%s))"
                 % version.replace(".", ", ")], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=support.TIMEOUT).returncode == 0:
            return python
    return None


class CaptureSink:
    """Our sink (in-process) with -c and a -D capture file."""

    def __init__(self, test, options=(), endpoint="127.0.0.1:0"):
        self.capture = os.path.join(support.temp_dir(test), "capture")
        self.sink = InProcessSink(test, list(options) + ["-c", "-D", self.capture], endpoint)

    def records(self, sessions, messages):
        """The captured records, once the counters show every session ended."""
        final = b"sess=%d quit=%d mesg=%d\r" % (sessions, sessions, messages)
        support.wait_until(lambda: self.sink.stdout().endswith(final),
                           what="sink counters %r (have %r)" % (final, self.sink.stdout()[-40:]))
        return interop.records(self.capture)


class SmtplibTest(support.BothEngines, unittest.TestCase):
    """smtplib.SMTP and smtplib.LMTP to our sink."""

    def check_smtp(self, records, client_addr):
        """The three records of smtplib_client's SMTP session."""
        self.assertEqual(len(records), 3)
        for record in records:
            self.assertEqual(
                (record.addr, record.proto, record.helo, record.received_from,
                 record.received_addr, record.received_with, record.by),
                (client_addr, b"ESMTP", b"client.example", b"client.example", client_addr,
                 b"ESMTP", b"smtp-sink"))
            self.assertRegex(record.received_date, b"^%s$" % interop.DATE)
        text, data, message = records
        # No SIZE= (the sink does not announce SIZE); the options as given.
        self.assertEqual((text.mail, text.rcpts, text.message),
                         (b"<sender@client.example>",
                          [b"<one@sink.example> NOTIFY=SUCCESS,FAILURE",
                           b"<two@sink.example> NOTIFY=SUCCESS,FAILURE"],
                          smtplib_client.TEXT_CAPTURED))
        self.assertEqual((data.mail, data.rcpts, data.message),
                         (b"<sender@client.example> BODY=8BITMIME", [b"<three@sink.example>"],
                          smtplib_client.BYTES_CAPTURED))
        # send_message() takes the recipients from To, Bcc, Cc, in that order.
        self.assertEqual((message.mail, message.rcpts),
                         (b"<sender@client.example>",
                          [b"<one@sink.example>", b"<hidden@sink.example>", b"<two@sink.example>"]))
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(message.message)
        expected = dict(smtplib_client.MESSAGE_HEADERS)
        del expected["Bcc"]
        self.assertEqual({name: parsed[name] for name in expected}, expected)
        self.assertNotIn("Bcc", parsed)
        self.assertEqual(parsed.get_content(), smtplib_client.MESSAGE_BODY)
        self.assertNotIn(b"\r", message.message)

    def check_lmtp(self, records):
        self.assertEqual(len(records), 2)
        for record in records:
            self.assertEqual((record.addr, record.proto, record.helo, record.received_from,
                              record.received_addr, record.received_with, record.mail),
                             (b"local", b"LMTP", b"client.example", b"client.example",
                              b"local", b"LMTP", b"<sender@client.example>"))
        self.assertEqual([(record.rcpts, record.message) for record in records],
                         [([b"<one@sink.example>"], smtplib_client.TEXT_CAPTURED),
                          ([b"<one@sink.example>", b"<two@sink.example>",
                            b"<three@sink.example>"], smtplib_client.BYTES_CAPTURED)])

    def test_smtp_over_ipv4(self):
        sink = CaptureSink(self)
        self.assertEqual(smtplib_client.deliver("smtp", "127.0.0.1", sink.sink.address[1]),
                         SMTP_RESULT)
        self.check_smtp(sink.records(1, 3), b"127.0.0.1")

    def test_smtp_over_ipv6(self):
        sink = CaptureSink(self, endpoint="[::1]:0")
        self.assertEqual(smtplib_client.deliver("smtp", "::1", sink.sink.address[1]), SMTP_RESULT)
        self.check_smtp(sink.records(1, 3), b"ipv6:::1")

    def test_lmtp_over_unix_socket(self):
        path = os.path.join(support.temp_dir(self), "lmtp.sock")
        sink = CaptureSink(self, ["-L"], "unix:" + path)
        self.assertEqual(smtplib_client.deliver("lmtp", path), LMTP_RESULT)
        self.check_lmtp(sink.records(1, 2))

    def test_each_python_version(self):
        """smtplib of Python 3.8 ... 3.13, each where it is installed."""
        for version in PYTHONS:
            with self.subTest(python=version):
                python = find_python(version)
                if python is None:
                    # Not something .ci/run installs: say so, and go on.
                    sys.stderr.write("\n*** SKIPPED: no Python %s here (python%s on PATH or "
                                     "pyenv's); its smtplib is NOT tested ***\n"
                                     % (version, version))
                    self.skipTest("no Python %s" % version)
                sink = CaptureSink(self)
                result = support.run([python, CLIENT, "smtp", "127.0.0.1",
                                      str(sink.sink.address[1])])
                self.assertEqual((result.returncode, result.stderr), (0, b""))
                self.assertEqual(json.loads(result.stdout.decode("ascii")), SMTP_RESULT)
                self.check_smtp(sink.records(1, 3), b"127.0.0.1")
                path = os.path.join(support.temp_dir(self), "lmtp.sock")
                sink = CaptureSink(self, ["-L"], "unix:" + path)
                result = support.run([python, CLIENT, "lmtp", path])
                self.assertEqual((result.returncode, result.stderr), (0, b""))
                self.assertEqual(json.loads(result.stdout.decode("ascii")), LMTP_RESULT)
                self.check_lmtp(sink.records(1, 2))

    def test_same_capture_as_postfix(self):
        """The SMTP session against Postfix's smtp-sink and ours (both as
        processes): the same records, ids and dates aside."""
        interop.need("postfix")
        captures = {}
        for kind in ("postfix", "ours"):
            directory = support.temp_dir(self)
            where = interop.endpoint(self, "ipv4")
            capture = os.path.join(directory, "capture")
            peer = Peer(self, interop.sink_cmd(kind) + ["-c", "-n", "1", "-D", capture,
                                                     where.text, "10"], where)
            self.assertEqual(smtplib_client.deliver("smtp", *where.address), SMTP_RESULT)
            rc, out, err = peer.wait_exit()
            self.assertEqual((rc, err, interop.sink_counters(out)[-1]),
                             (0, b"", b"sess=1 quit=1 mesg=3"), kind)
            with open(capture, "rb") as handle:
                captures[kind] = re.sub(rb" id [0-9a-f]{8};\n\t%s\n" % interop.DATE,
                                        b" id ID;\n\tDATE\n", handle.read())
        self.assertEqual(captures["ours"], captures["postfix"])
        self.check_smtp(interop.records(capture), b"127.0.0.1")


class SwaksTest(support.BothEngines, unittest.TestCase):
    """swaks (Debian's package) to our sink."""

    def setUp(self):
        self.swaks = support.need_program("swaks")

    def swaks_run(self, sink, *args):
        if sink.sink.family == socket.AF_UNIX:
            where = ["--socket", sink.sink.address]
        else:
            where = ["--server", sink.sink.address[0], "--port", str(sink.sink.address[1])]
        result = support.run([self.swaks] + where + [
            "--helo", "client.example", "--from", "sender@client.example",
            "--timeout", str(support.TIMEOUT)] + list(args))
        self.assertEqual((result.returncode, result.stderr), (0, b""), result.stdout)
        return result.stdout

    def check_record(self, record, addr, proto, rcpts, subject, body):
        self.assertEqual(
            (record.addr, record.proto, record.helo, record.mail, record.rcpts,
             record.received_from, record.received_with),
            (addr, proto, b"client.example", b"<sender@client.example>",
             [b"<%s>" % rcpt for rcpt in rcpts], b"client.example", proto))
        self.assertEqual(interop.header(record, b"Subject"), [subject])
        self.assertEqual(interop.header(record, b"To"), [b",".join(rcpts)])
        self.assertRegex(interop.header(record, b"X-Mailer")[0], rb"^swaks v")
        # swaks ends the body with an empty line of its own.
        self.assertEqual(record.body.rstrip(b"\n"), body)

    def test_plain(self):
        sink = CaptureSink(self)
        self.swaks_run(sink, "--to", "one@sink.example", "--header", "Subject: swaks plain",
                       "--body", "first line\n.dot line\n..two dots\nlast line")
        (record,) = sink.records(1, 1)
        self.check_record(record, b"127.0.0.1", b"ESMTP", [b"one@sink.example"],
                          b"swaks plain", b"first line\n.dot line\n..two dots\nlast line")

    def test_pipeline(self):
        sink = CaptureSink(self)
        transcript = self.swaks_run(sink, "--pipeline", "--to",
                                    "one@sink.example,two@sink.example,three@sink.example",
                                    "--header", "Subject: pipelined", "--body", "body")
        # MAIL, the RCPTs and DATA went out before the first reply to them.
        self.assertRegex(transcript, rb"-> MAIL FROM:<sender@client.example>\r?\n"
                         rb"(.*-> RCPT TO:.*\r?\n){3}.*-> DATA\r?\n<-  250 2.1.0 Ok")
        (record,) = sink.records(1, 1)
        self.check_record(record, b"127.0.0.1", b"ESMTP",
                          [b"one@sink.example", b"two@sink.example", b"three@sink.example"],
                          b"pipelined", b"body")

    def test_lmtp_over_unix_socket(self):
        path = os.path.join(support.temp_dir(self), "lmtp.sock")
        sink = CaptureSink(self, ["-L"], "unix:" + path)
        rcpts = [b"one@sink.example", b"two@sink.example", b"three@sink.example"]
        transcript = self.swaks_run(sink, "--protocol", "LMTP", "--to", b",".join(rcpts),
                                    "--header", "Subject: lmtp", "--body", ".dot\nbody")
        self.assertEqual(transcript.count(b"<-  250 2.2.0 Ok"), 3, transcript)
        (record,) = sink.records(1, 1)
        self.check_record(record, b"local", b"LMTP", rcpts, b"lmtp", b".dot\nbody")

    def test_lmtp_pipelined_over_ipv6(self):
        sink = CaptureSink(self, ["-L"], "[::1]:0")
        rcpts = [b"one@sink.example", b"two@sink.example"]
        transcript = self.swaks_run(sink, "--protocol", "LMTP", "--pipeline",
                                    "--to", b",".join(rcpts), "--header", "Subject: v6",
                                    "--body", "body")
        self.assertEqual(transcript.count(b"<-  250 2.2.0 Ok"), 2, transcript)
        (record,) = sink.records(1, 1)
        self.check_record(record, b"ipv6:::1", b"LMTP", rcpts, b"v6", b"body")


if __name__ == "__main__":
    unittest.main()
