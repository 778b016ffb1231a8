"""smtp-sink --chunking over real sockets: BDAT (RFC 3030) with exact octet
counts, no dot-stuffing, BDAT 0 LAST, errors that keep the stream in step,
the LAST chunk as the end of data (capture, -c, -M, LMTP, verify)."""

import json
import os
import socket
import time
import unittest

from smtpcore import integrity
from tests import support
from tests.support import InProcessSink

GREETING = b"220 smtp-sink ESMTP\r\n"
ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
ENVELOPE_OK = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
OK = b"250 2.0.0 Ok\r\n"
NEED_RCPT = b"503 5.5.1 Error: need RCPT command\r\n"
# Anything goes in a chunk: an end of data, commands, NULs, lone CRs.
AWKWARD = b"Subject: chunks\r\n\r\n.\r\n..x\r\nQUIT\r\nRSET\r\n\0\rbare\nend\r\n"


def bdat(data, last=False):
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


def chunk_ok(size):
    return b"250 2.0.0 Ok: %d bytes\r\n" % size


def files_under(top):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)


def message_of(record):
    """What follows the Received: header (whose date line is the last
    line that starts with a tab)."""
    return record.rsplit(b"\n\t", 1)[1].split(b"\n", 1)[1]


def read(path):
    with open(path, "rb") as f:
        return f.read()


class ChunkingTest(support.BothEngines, unittest.TestCase):

    def test_ehlo_announces_chunking_last(self):
        sink = InProcessSink(self, ["--chunking"])
        data, _ = sink.converse([b"EHLO x\r\n"])
        self.assertTrue(data.endswith(b"250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-CHUNKING\r\n"
                                      b"250 \r\n"), data)
        sink = InProcessSink(self, ["--chunking", "-N", "-E"])
        data, _ = sink.converse([b"EHLO x\r\n"])
        self.assertTrue(data.endswith(b"250-XFORWARD NAME ADDR PROTO HELO\r\n250-CHUNKING\r\n"
                                      b"250 \r\n"), data)

    def test_chunks_across_packets_and_capture(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["--chunking", "-d", top + "/m."])
        first, second = AWKWARD[:20], AWKWARD[20:]
        head = b"BDAT %d\r\n" % len(first)
        steps = [b"EHLO client.example\r\n", ENVELOPE, head + first[:3], first[3:9], first[9:],
                 bdat(second[:5]) + b"BDAT %d LAST\r\n" % (len(second) - 5) + second[5:7],
                 second[7:], b"NOOP\r\n", b"QUIT\r\n"]
        data, how = sink.converse(steps)
        self.assertTrue(data.endswith(ENVELOPE_OK + chunk_ok(20) + chunk_ok(5) + OK + OK
                                      + b"221 Bye\r\n"), data)
        [path] = files_under(top)
        record = read(path)
        self.assertIn(b"X-Rcpt-Args: <b@example.com>\nX-Data-Command: BDAT\nReceived: from "
                      b"client.example ([127.0.0.1])\n", record)
        # The octets as they were, minus the CRs (as every capture drops
        # them), and the empty line that ends every record.
        self.assertEqual(message_of(record), AWKWARD.replace(b"\r", b"") + b"\n")

    def test_data_transactions_still_work(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["--chunking", "-d", top + "/m."])
        data, _ = sink.converse([ENVELOPE + b"DATA\r\n..dot\r\n.\r\n" + ENVELOPE
                                 + bdat(b"x\r\n", last=True) + b"QUIT\r\n"])
        self.assertEqual(data, GREETING + ENVELOPE_OK + b"354 End data with <CR><LF>.<CR><LF>"
                         b"\r\n" + OK + ENVELOPE_OK + OK + b"221 Bye\r\n")
        records = sorted(read(path) for path in files_under(top))
        self.assertEqual(sorted(b"X-Data-Command: DATA\n" in r for r in records), [False, True])
        self.assertTrue(any(r.endswith(b"\n.dot\n\n") for r in records))

    def test_bdat_zero_last(self):
        sink = InProcessSink(self, ["--chunking", "-c"])
        data, _ = sink.converse([ENVELOPE + bdat(b"abc") + b"BDAT 0 LAST\r\n" + ENVELOPE
                                 + b"bdat 0 last\r\n"])
        self.assertEqual(data, GREETING + ENVELOPE_OK + chunk_ok(3) + OK + ENVELOPE_OK + OK)
        support.wait_until(lambda: sink.stdout().endswith(b"sess=1 quit=0 mesg=2\r"),
                           what="two messages counted")

    def test_errors_keep_the_stream_in_step(self):
        sink = InProcessSink(self, ["--chunking"])
        trap = b"NOOP\r\nQUIT\r\n"             # octets of a refused chunk: never commands
        data, how = sink.converse([
            bdat(trap) + b"NOOP\r\n",                                   # no MAIL
            b"MAIL FROM:<a>\r\n" + bdat(trap, last=True) + b"NOOP\r\n",  # no RCPT
            b"RCPT TO:<b>\r\n" + bdat(trap) + b"RCPT TO:<c>\r\nDATA\r\n" + bdat(trap, True),
            b"BDAT 6 LAST\r\nQUIT\r\n",                                 # no transaction
            b"QUIT\r\n"])
        self.assertEqual(data, GREETING +
                         NEED_RCPT + OK +                                       # 1
                         b"250 2.1.0 Ok\r\n" + NEED_RCPT + OK +                  # 2
                         b"250 2.1.5 Ok\r\n" + chunk_ok(len(trap)) +             # 3
                         b"503 5.5.1 Error: RCPT after BDAT\r\n" +
                         b"503 5.5.1 Error: DATA after BDAT\r\n" + OK +
                         NEED_RCPT + b"221 Bye\r\n")                            # 4, 5

    def test_bad_size_closes(self):
        for line in (b"BDAT\r\n", b"BDAT x\r\n", b"BDAT 5 NOTLAST\r\n", b"BDAT -1\r\n",
                     b"BDAT 1234567890123456789\r\n"):
            with self.subTest(line=line):
                sink = InProcessSink(self, ["--chunking"])
                data, how = sink.converse([ENVELOPE + line + b"12345NOOP\r\n"],
                                          half_close=False)
                self.assertEqual(data, GREETING + ENVELOPE_OK +
                                 b"501 5.5.4 Syntax: BDAT count [LAST]\r\n")
                self.assertIn(how, ("eof", "reset"))

    def test_rset_between_chunks(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["--chunking", "-d", top + "/m."])
        data, _ = sink.converse([ENVELOPE + bdat(b"dropped\r\n") + b"RSET\r\n" + ENVELOPE
                                 + bdat(b"kept\r\n", last=True) + b"QUIT\r\n"])
        self.assertEqual(data, GREETING + ENVELOPE_OK + chunk_ok(9) + b"250 2.1.0 Ok\r\n"
                         + ENVELOPE_OK + OK + b"221 Bye\r\n")
        [path] = files_under(top)
        self.assertEqual(message_of(read(path)), b"kept\n\n")

    def test_data_flags_apply_to_bdat(self):
        # -f data: every chunk refused, after its octets; -r .: the LAST one
        # refused as "." is, the message still counted.
        sink = InProcessSink(self, ["--chunking", "-f", "data", "-c"])
        data, _ = sink.converse([ENVELOPE + bdat(b"QUIT\r\n") + bdat(b"x", True) + b"NOOP\r\n"])
        self.assertEqual(data, GREETING + ENVELOPE_OK + b"500 5.3.0 Error: command failed\r\n"
                         * 2 + OK)
        sink = InProcessSink(self, ["--chunking", "-r", ".", "-c"])
        data, _ = sink.converse([ENVELOPE + bdat(b"a") + bdat(b"b", True) + b"QUIT\r\n"])
        self.assertEqual(data, GREETING + ENVELOPE_OK + chunk_ok(1) +
                         b"450 4.3.0 Error: command failed\r\n221 Bye\r\n")
        support.wait_until(lambda: b"mesg=1" in sink.stdout(), what="the message counted")
        sink = InProcessSink(self, ["--chunking", "-Q", "data"])
        data, _ = sink.converse([ENVELOPE + bdat(b"a")])
        self.assertEqual(data, GREETING + ENVELOPE_OK + b"421 4.0.0 Server closing connection\r\n")

    def test_delayed_chunk_reply(self):
        sink = InProcessSink(self, ["--chunking", "-W", "data:1"])
        sock = support.connect(sink.address, sink.family)
        self.addCleanup(sock.close)
        support.recv_until(sock, b"\r\n")
        sock.sendall(ENVELOPE)
        support.recv_until(sock, b"2.1.5 Ok\r\n")
        start = time.monotonic()
        sock.sendall(bdat(b"a\r\n.\r\n", last=True) + b"NOOP\r\n")
        self.assertEqual(support.recv_until(sock, OK + OK), OK + OK)
        self.assertGreaterEqual(time.monotonic() - start, 0.95)

    def test_lmtp_one_reply_per_recipient(self):
        sink = InProcessSink(self, ["--chunking", "-L"])
        data, _ = sink.converse([b"LHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nRCPT TO:<c>\r\n"
                                 + bdat(b"x\r\n") + bdat(b"", True) + b"QUIT\r\n"])
        self.assertTrue(data.endswith(b"250 2.1.5 Ok\r\n" * 2 + chunk_ok(3) +
                                      b"250 2.2.0 Ok\r\n" * 2 + b"221 Bye\r\n"), data)

    def test_verify_bdat_messages(self):
        sink = InProcessSink(self, ["--chunking", "--verify"])
        run = b"a1b2c3d4e5f60718"
        good = integrity.header(run, 0, 3, AWKWARD) + AWKWARD
        bad = integrity.header(run, 1, 3, AWKWARD) + AWKWARD.replace(b"bare", b"BARE")
        data, _ = sink.converse([ENVELOPE + bdat(good[:50]) + bdat(good[50:], True),
                                 ENVELOPE + bdat(bad, True), b"QUIT\r\n"])
        self.assertEqual(data.count(OK), 2)
        sink.stop()
        line = json.loads(sink.stdout().decode())
        self.assertEqual(line["verify"]["runs"][run.decode()],
                         {"ok": 1, "corrupt": 1, "duplicate": 0, "missing": 1, "count": 3})

    def test_message_limit_at_last_chunk(self):
        port = support.free_port()
        server = support.Server(support.python_cmd(support.SINK, *(
            support.PRIVS + ["--chunking", "-M", "1", "127.0.0.1:%d" % port, "5"])),
            ("127.0.0.1", port), socket.AF_INET).start(self)
        data, _ = support.converse(("127.0.0.1", port), socket.AF_INET,
                                   [ENVELOPE + bdat(b"a") + bdat(b"b", True)])
        self.assertEqual(data, GREETING + ENVELOPE_OK + chunk_ok(1))   # exits before replying
        rc, out, err = server.wait()
        self.assertEqual((rc, err), (0, b""))

    def test_bdat_unknown_without_the_option(self):
        sink = InProcessSink(self, [])
        data, _ = sink.converse([b"EHLO x\r\n", ENVELOPE + b"BDAT 3 LAST\r\n"])
        self.assertNotIn(b"CHUNKING", data)
        self.assertTrue(data.endswith(ENVELOPE_OK + b"500 5.5.1 Error: unknown command\r\n"))


if __name__ == "__main__":
    unittest.main()
