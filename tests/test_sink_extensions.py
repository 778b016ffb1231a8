"""smtp-sink's smaller extensions over real sockets: --keep-pipelining,
--lmtp-replies, --seed; how bad values of the long options are refused;
and, against Postfix's smtp-sink, that without them BDAT and STARTTLS are
still unknown commands."""

import os
import random
import time
import unittest

from tests import support
from tests.support import InProcessSink
from tests.test_sink_differential import DifferentialBase

EHLO = (b"250-smtp-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n"
        b"250-XCLIENT NAME HELO\r\n250-XFORWARD NAME ADDR PROTO HELO\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 \r\n")
GREETING = b"220 smtp-sink ESMTP\r\n"
SLACK = 5.0     # upper bound on scheduling noise, seconds


def lmtp_transaction(recipients):
    return (b"MAIL FROM:<a@example.com>\r\n"
            + b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(recipients))
            + b"DATA\r\nSubject: s\r\n\r\nx\r\n.\r\n")


class KeepPipeliningTest(support.BothEngines, unittest.TestCase):

    def ehlo(self, args):
        sink = InProcessSink(self, args)
        data, _ = sink.converse([b"EHLO x\r\n"])
        return data[len(GREETING):]

    def test_announced(self):
        without = EHLO.replace(b"250-PIPELINING\r\n", b"")
        self.assertEqual(self.ehlo(["-f", "rcpt"]), without)                # as Postfix
        self.assertEqual(self.ehlo(["-f", "rcpt", "--keep-pipelining"]), EHLO)
        self.assertEqual(self.ehlo(["--keep-pipelining", "-r", "mail"]), EHLO)
        self.assertEqual(self.ehlo(["--keep-pipelining", "-r", "mail", "-p"]), without)
        self.assertEqual(self.ehlo(["-p", "--keep-pipelining"]), without)   # -p wins

    def test_replies_in_order(self):
        # One write with a whole pipelined session; rejects, a delayed
        # reply and good ones come back in the order of the commands.
        sink = InProcessSink(self, ["--keep-pipelining", "-r", "mail", "-f", "rcpt",
                                    "-W", "noop:1"])
        data, _ = sink.converse([b"EHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nNOOP\r\nDATA\r\n"
                                 b"RSET\r\nVRFY x\r\nQUIT\r\n"])
        self.assertEqual(data, GREETING + EHLO + b"450 4.3.0 Error: command failed\r\n"
                         b"500 5.3.0 Error: command failed\r\n250 2.0.0 Ok\r\n"
                         b"503 5.5.1 Error: need RCPT command\r\n250 2.1.0 Ok\r\n"
                         b"250 2.0.0 Ok\r\n221 Bye\r\n")


class LmtpRepliesTest(support.BothEngines, unittest.TestCase):

    def test_cycling_per_message(self):
        sink = InProcessSink(self, ["-L", "--lmtp-replies=250,452,550"])
        data, _ = sink.converse([b"LHLO x\r\n" + lmtp_transaction(4) + lmtp_transaction(2)
                                 + b"QUIT\r\n"])
        ok, full, unknown = (b"250 2.2.0 Ok\r\n", b"452 4.0.0 Error: delivery failed\r\n",
                             b"550 5.0.0 Error: delivery failed\r\n")
        after = data.split(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        self.assertEqual(after[1], ok + full + unknown + ok + b"250 2.1.0 Ok\r\n"
                         + b"250 2.1.5 Ok\r\n" * 2)
        self.assertEqual(after[2], ok + full + b"221 Bye\r\n")

    def test_full_replies(self):
        sink = InProcessSink(self, ["-L", "--lmtp-replies", "452 4.2.2 Mailbox full, "
                                    "550 5.1.1 <x>: User unknown,251"])
        data, _ = sink.converse([lmtp_transaction(3)])
        self.assertTrue(data.endswith(b"\r\n452 4.2.2 Mailbox full\r\n550 5.1.1 <x>: User "
                                      b"unknown\r\n251 2.0.0 Ok\r\n"), data)

    def test_rejected_dot_wins(self):
        sink = InProcessSink(self, ["-L", "--lmtp-replies=452", "-f", "."])
        data, _ = sink.converse([lmtp_transaction(2)])
        self.assertTrue(data.endswith(b"\r\n" + b"500 5.3.0 Error: command failed\r\n" * 2))

    def test_as_postfix_after_the_message(self):
        # The recipient count goes below zero as without the option: a "."
        # with no transaction gets no reply.
        sink = InProcessSink(self, ["-L", "--lmtp-replies=550"])
        data, _ = sink.converse([lmtp_transaction(1) + b".\r\nNOOP\r\n"])
        self.assertTrue(data.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"
                                      b"550 5.0.0 Error: delivery failed\r\n250 2.0.0 Ok\r\n"))

    def test_with_bdat(self):
        sink = InProcessSink(self, ["-L", "--chunking", "--lmtp-replies=250,550"])
        data, _ = sink.converse([b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nRCPT TO:<c>\r\n"
                                 b"BDAT 3 LAST\r\nx\r\n"])
        self.assertTrue(data.endswith(b"250 2.1.5 Ok\r\n250 2.2.0 Ok\r\n"
                                      b"550 5.0.0 Error: delivery failed\r\n"))


class SeedTest(support.BothEngines, unittest.TestCase):

    def test_capture_ids_repeat(self):
        names = []
        for seed in ("42", "42", "-7"):
            top = support.temp_dir(self)
            sink = InProcessSink(self, ["--seed", seed, "-d", top + "/m."])
            sink.converse([b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n.\r\n"
                           b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n.\r\n"])
            names.append(sorted(os.listdir(top)))
        generator = random.Random("42:0")       # --seed=42, session 0 (see --seed)
        expected = sorted("m.%08x" % generator.getrandbits(31) for _ in range(2))
        self.assertEqual(names[0], expected)
        self.assertEqual(names[1], expected)
        self.assertNotEqual(names[2], expected)

    def test_delay_odds_repeat(self):
        # With seed 50 and odds 50, the three RCPT delays are 1, 0 and 2
        # times the delay (as session 0's stream, random.Random("50:0"),
        # throws the die).
        generator, multipliers = random.Random("50:0"), []
        for _ in range(3):
            rolls = 0
            while generator.randrange(100) < 50:
                rolls += 1
            multipliers.append(rolls)
        self.assertEqual(multipliers, [1, 0, 2])
        sink = InProcessSink(self, ["--seed=50", "-W", "rcpt:1:50"])
        sock = support.connect(sink.address, sink.family)
        self.addCleanup(sock.close)
        support.recv_until(sock, b"\r\n")
        sock.sendall(b"MAIL FROM:<a>\r\n")
        support.recv_until(sock, b"\r\n")
        times, start = [], time.monotonic()
        sock.sendall(b"RCPT TO:<b>\r\nRCPT TO:<c>\r\nRCPT TO:<d>\r\n")
        received = b""
        sock.settimeout(support.TIMEOUT)
        while len(times) < 3:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
            while received.count(b"250 2.1.5 Ok\r\n") > len(times):
                times.append(time.monotonic() - start)
        self.assertEqual(len(times), 3)
        gaps = [times[0], times[1] - times[0], times[2] - times[1]]
        for gap, want in zip(gaps, multipliers):
            self.assertGreaterEqual(gap, want - 0.05)
            self.assertLess(gap, want + SLACK)
        self.assertGreaterEqual(times[2], 2.95)

    def test_bad_seed(self):
        for value in ("abc", "", "1.5", "0x10"):
            with self.subTest(value=value):
                result = support.run(support.python_cmd(
                    support.SINK, *(support.PRIVS + ["--seed", value, "127.0.0.1:0", "5"])))
                self.assertEqual(result.returncode, 1)
                self.assertEqual(result.stderr, b"smtp-sink: fatal: bad --seed value: %s\n"
                                 % value.encode())


class LongOptionErrorsTest(unittest.TestCase):
    """Refused as they come, in Postfix's wording style."""

    def fails(self, args, complaint):
        result = support.run(support.python_cmd(
            support.SINK, *(support.PRIVS + args + ["127.0.0.1:0", "5"])))
        self.assertEqual((result.returncode, result.stdout), (1, b""), args)
        self.assertEqual(result.stderr, b"smtp-sink: fatal: " + complaint + b"\n", args)

    def test_lmtp_replies(self):
        for spec in ("600", "25", "250x", "", "2500", "250,,550", "150 x", "550\tx"):
            with self.subTest(spec=spec):
                bad = [item for item in spec.split(",")
                       if not (len(item) == 3 and item[0] in "245" and item.isdigit())][0]
                # Unprintable bytes show as '?', as in all the sink's diagnostics.
                self.fails(["-L", "--lmtp-replies=" + spec],
                           b"bad --lmtp-replies reply: "
                           + bad.strip(" ").replace("\t", "?").encode())
        self.fails(["--lmtp-replies=250"], b"--lmtp-replies needs -L")

    def test_first_problem_wins(self):
        # Checked in getopt's order, as Postfix's letters: -m first here.
        self.fails(["-m", "0", "--seed", "x"], b"bad concurrency limit: 0")
        self.fails(["--seed", "x", "-m", "0"], b"bad --seed value: x")


class WithoutOptionsTest(DifferentialBase):
    """Against Postfix: BDAT and STARTTLS are unknown without our options."""

    def test_bdat_and_starttls_unknown(self):
        self.compare("no extensions", ["-c"], [[
            b"EHLO x\r\n", b"STARTTLS\r\n", b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n",
            b"BDAT 7 LAST\r\n", b"QUIT\r\n", b"BDAT 0 LAST\r\n", b"DATA\r\n",
            b"x\r\n.\r\n", b"QUIT\r\n"]])


if __name__ == "__main__":
    unittest.main()
