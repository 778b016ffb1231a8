"""smtp_source.py's conversations, flag by flag, over real sockets.

The script runs as a subprocess against the byte-logging fake server (TCP
on 127.0.0.1 and ::1, and UNIX-domain sockets); each test checks the bytes
the server received, stdout, stderr and the exit status against what
Postfix 3.7's smtp-source does (the reference notes, PART B).
"""

import re
import threading
import time
import unittest

from tests import support
from tests.fake_smtp import OURS, Close, FakeServer, run_tool, seq, temp_file

M = ["-M", "client.example"]
LA_DE_DA = (b"La de da de da 1.\r\nLa de da de da 2.\r\n"
            b"La de da de da 3.\r\nLa de da de da 4.\r\n")
DATE = re.compile(rb"Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), [ 1-3][0-9] "
                  rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) 2[0-9]{3} "
                  rb"[0-2][0-9]:[0-5][0-9]:[0-6][0-9] [-+][0-9]{4} \([^)]+\)\r\n")


def headers(pid, fd=3, count=0, sender=b"foo@client.example",
            recipient=b"foo@client.example", host=b"client.example", subject=None):
    """The generated headers, with a placeholder for the date."""
    text = (b"From: <%s>\r\nTo: <%s>\r\nDate: <date>\r\nMessage-Id: <%04x.%04x.%04x@%s>\r\n"
            % (sender, recipient, pid, fd, count & 0xFFFFFFFF, host))
    if subject is not None:
        text += b"Subject: " + subject + b"\r\n"
    return text + b"\r\n"


def undate(message):
    """The message with its Date: value (which must be well formed) replaced."""
    found = DATE.search(message)
    assert found, message
    return message[:found.start()] + b"Date: <date>\r\n" + message[found.end():]


class SessionCase(support.BothEngines, unittest.TestCase):

    def source(self, args, replies=None, family="inet", lmtp=False, timeout=support.TIMEOUT):
        self.server = FakeServer(replies, family, lmtp).start(self)
        return run_tool(OURS, list(args) + ["TARGET"], self.server, timeout=timeout)

    def assertOk(self, result, stdout=b"", connections=1):
        self.assertEqual((result.rc, result.stderr, result.stdout), (0, b"", stdout))
        self.assertEqual(len(result.connections), connections)

    def commands(self, result, index=0):
        return result.connections[index].commands()

    def messages(self, result, index=0):
        return result.connections[index].messages()


class ConversationTests(SessionCase):

    def test_default_session(self):
        result = self.source(M)
        self.assertOk(result)
        conn = result.connections[0]
        self.assertEqual(conn.events[:-4], [
            ("S", b"220 fake ESMTP\r\n"),
            ("C", b"HELO client.example\r\n"), ("S", b"250 fake\r\n"),
            ("C", b"MAIL FROM:<foo@client.example>\r\n"), ("S", b"250 2.1.0 Ok\r\n"),
            ("C", b"RCPT TO:<foo@client.example>\r\n"), ("S", b"250 2.1.5 Ok\r\n"),
            ("C", b"DATA\r\n"), ("S", b"354 go\r\n")])
        kind, message = conn.events[-4]
        self.assertEqual(kind, "D")
        self.assertEqual(undate(message), headers(result.pid) + LA_DE_DA + b".\r\n")
        self.assertEqual(conn.events[-3:], [("S", b"250 2.0.0 Ok\r\n"),
                                             ("C", b"QUIT\r\n"), ("S", b"221 Bye\r\n")])

    def test_ends_with_a_reset(self):
        # SO_LINGER {1, 0}: the server sees RST after the 221, not FIN.
        result = self.source(M)
        self.assertEqual(result.connections[0].end, "reset")
        self.assertEqual(result.connections[0].events[-1], ("S", b"221 Bye\r\n"))

    def test_one_command_at_a_time(self):
        # Every command arrives in a packet of its own, after the reply to
        # the one before (no pipelining): the raw bytes split exactly there.
        result = self.source(M + ["-r", "2"])
        conn = result.connections[0]
        self.assertEqual(bytes(conn.raw), b"".join(conn.client_events()))
        for (kind, _), (next_kind, _) in zip(conn.events, conn.events[1:]):
            if kind in ("C", "D"):
                self.assertEqual(next_kind, "S")

    def test_default_hostname(self):
        import socket
        host = socket.gethostname().encode()
        result = self.source([])
        self.assertOk(result)
        self.assertEqual(self.commands(result)[:3], [
            b"HELO " + host + b"\r\n", b"MAIL FROM:<foo@" + host + b">\r\n",
            b"RCPT TO:<foo@" + host + b">\r\n"])
        self.assertEqual(undate(self.messages(result)[0]),
                         headers(result.pid, sender=b"foo@" + host, recipient=b"foo@" + host,
                                 host=host) + LA_DE_DA + b".\r\n")

    def test_message_count_and_disconnect(self):
        result = self.source(M + ["-m", "3"])
        self.assertOk(result, connections=3)
        for index, count in enumerate((2, 1, 0)):       # messages still to send
            self.assertEqual(undate(self.messages(result, index)[0]),
                             headers(result.pid, count=count) + LA_DE_DA + b".\r\n")
            self.assertEqual(self.commands(result, index)[-1], b"QUIT\r\n")

    def test_d_keeps_the_connection(self):
        result = self.source(M + ["-d", "-m", "3"])
        self.assertOk(result)
        commands = self.commands(result)
        self.assertEqual(commands.count(b"HELO client.example\r\n"), 1)
        self.assertEqual(commands.count(b"MAIL FROM:<foo@client.example>\r\n"), 3)
        self.assertEqual(commands.count(b"QUIT\r\n"), 1)
        self.assertNotIn(b"RSET\r\n", commands)
        self.assertEqual([undate(m) for m in self.messages(result)],
                         [headers(result.pid, count=n) + LA_DE_DA + b".\r\n" for n in (2, 1, 0)])

    def test_all_messages_share_one_date(self):
        result = self.source(M + ["-d", "-m", "2", "-w", "1"])
        first, second = self.messages(result)
        self.assertEqual(DATE.search(first).group(0), DATE.search(second).group(0))


class AddressTests(SessionCase):

    def rcpts(self, result, index=0):
        return [c for c in self.commands(result, index) if c.startswith(b"RCPT")]

    def test_r_counts_down_and_leaves_the_last_bare(self):
        result = self.source(M + ["-r", "3"])
        self.assertOk(result)
        self.assertEqual(self.rcpts(result), [b"RCPT TO:<3foo@client.example>\r\n",
                                              b"RCPT TO:<2foo@client.example>\r\n",
                                              b"RCPT TO:<foo@client.example>\r\n"])
        # The To: header has the address without a number.
        self.assertIn(b"\r\nTo: <foo@client.example>\r\n", self.messages(result)[0])

    def test_t_with_r(self):
        result = self.source(M + ["-t", "rcpt@example.org", "-r", "3"])
        self.assertEqual(self.rcpts(result), [b"RCPT TO:<3rcpt@example.org>\r\n",
                                              b"RCPT TO:<2rcpt@example.org>\r\n",
                                              b"RCPT TO:<rcpt@example.org>\r\n"])
        self.assertIn(b"\r\nTo: <rcpt@example.org>\r\n", self.messages(result)[0])

    def test_n_counts_up_over_the_whole_run(self):
        result = self.source(M + ["-N"])
        self.assertEqual(self.rcpts(result), [b"RCPT TO:<1foo@client.example>\r\n"])
        result = self.source(M + ["-N", "-m", "2", "-r", "2", "-d"])
        self.assertEqual(self.rcpts(result), [b"RCPT TO:<%dfoo@client.example>\r\n" % n
                                              for n in (1, 2, 3, 4)])
        result = self.source(M + ["-N", "-m", "3", "-r", "2"])
        self.assertEqual([self.rcpts(result, i) for i in range(3)],
                         [[b"RCPT TO:<%dfoo@client.example>\r\n" % n for n in pair]
                          for pair in ((1, 2), (3, 4), (5, 6))])

    def test_n_is_shared_by_parallel_sessions(self):
        result = self.source(M + ["-N", "-s", "2", "-m", "4", "-r", "2"])
        self.assertOk(result, connections=4)
        numbers = sorted(int(re.match(rb"RCPT TO:<(\d+)foo", c).group(1))
                         for i in range(4) for c in self.rcpts(result, i))
        self.assertEqual(numbers, list(range(1, 9)))

    def test_f_and_t_are_used_as_given(self):
        table = {
            ("-f", "sender@example.com"): (b"MAIL FROM:<sender@example.com>\r\n",
                                           b"From: <sender@example.com>\r\n"),
            ("-f", ""): (b"MAIL FROM:<>\r\n", b"From: <>\r\n"),
            ("-f", "<x>"): (b"MAIL FROM:<<x>>\r\n", b"From: <<x>>\r\n"),
            ("-t", ""): (b"RCPT TO:<>\r\n", b"To: <>\r\n"),
            ("-t", "a b"): (b"RCPT TO:<a b>\r\n", b"To: <a b>\r\n"),
            ("-f", b"\xc3\xa9@x"): (b"MAIL FROM:<\xc3\xa9@x>\r\n", b"From: <\xc3\xa9@x>\r\n"),
        }
        for args, (command, header) in table.items():
            with self.subTest(args=args):
                result = self.source(M + list(args))
                self.assertOk(result)
                self.assertIn(command, self.commands(result))
                self.assertIn(header, self.messages(result)[0])

    def test_m_sets_helo_addresses_and_message_id(self):
        result = self.source(["-M", "myhost.example", "-f", "s@x"])
        self.assertEqual(self.commands(result)[:3], [
            b"HELO myhost.example\r\n", b"MAIL FROM:<s@x>\r\n",
            b"RCPT TO:<foo@myhost.example>\r\n"])
        self.assertIn(b".0003.0000@myhost.example>", self.messages(result)[0])

    def test_m_address_literal(self):
        result = self.source(["-M", "[10.1.2.3]"])
        self.assertEqual(self.commands(result)[:2], [b"HELO [10.1.2.3]\r\n",
                                                     b"MAIL FROM:<foo@[10.1.2.3]>\r\n"])


class ContentTests(SessionCase):

    def body(self, args):
        result = self.source(M + list(args))
        self.assertOk(result)
        return result, self.messages(result)[0]

    def test_subject(self):
        result, message = self.body(["-S", "Subject line"])
        self.assertEqual(undate(message), headers(result.pid, subject=b"Subject line")
                         + LA_DE_DA + b".\r\n")
        _, message = self.body(["-S", ""])
        self.assertIn(b"\r\nSubject: \r\n\r\n", message)

    def test_o_sends_no_helo_and_no_headers(self):
        result, message = self.body(["-o", "-S", "ignored"])
        self.assertEqual(message, LA_DE_DA + b".\r\n")
        self.assertEqual(self.commands(result)[0], b"MAIL FROM:<foo@client.example>\r\n")

    def test_length_payloads(self):
        def line(number):
            return b"%d" % (number % 10) + b"X" * 77 + b"\r\n"
        table = {
            1: b"X\r\n", 2: b"XX\r\n", 78: b"X" * 78 + b"\r\n", 79: b"X" * 79 + b"\r\n",
            80: b"X" * 80 + b"\r\n", 81: line(1) + b"X\r\n", 100: line(1) + b"X" * 20 + b"\r\n",
            160: line(1) + b"X" * 80 + b"\r\n", 161: line(1) + line(2) + b"X\r\n",
            250: line(1) + line(2) + line(3) + b"X" * 10 + b"\r\n",
            1000: b"".join(line(n) for n in range(1, 13)) + b"X" * 40 + b"\r\n",
        }
        for length, body in table.items():
            with self.subTest(length=length):
                _, message = self.body(["-o", "-l", str(length)])
                self.assertEqual(message, body + b".\r\n")
        result, message = self.body(["-l", "5x"])          # atoi: 5
        self.assertEqual(undate(message), headers(result.pid) + b"XXXXX\r\n.\r\n")

    def test_long_payload_in_one_piece(self):
        _, message = self.body(["-o", "-l", "100000"])
        self.assertEqual(len(message), 100000 + 2 + 3)
        self.assertTrue(message.startswith(b"1" + b"X" * 77 + b"\r\n2"))

    def test_files(self):
        table = {
            b"a\nb": b"a\r\nb\r\n\r\n",
            b"a\nb\n": b"a\r\nb\r\n\r\n",
            b"a": b"a\r\n\r\n",
            b"\n": b"\r\n\r\n",
            b".": b"..\r\n\r\n",
            b".x\n..y\n.\r\nz\r\n\n": b"..x\r\n...y\r\n..\r\r\nz\r\r\n\r\n\r\n",
            b"CRLF line\r\n": b"CRLF line\r\r\n\r\n",
            b"x\0y\n": b"x\0y\r\n\r\n",
            b"L" * 5000 + b"\n": b"L" * 5000 + b"\r\n\r\n",
            b"": LA_DE_DA,           # an empty file: La de da, and no headers
        }
        for content, body in table.items():
            with self.subTest(content=content[:20]):
                path = temp_file(self, content)
                _, message = self.body(["-F", path, "-S", "ignored"])
                self.assertEqual(message, body + b".\r\n")

    def test_file_is_read_once_and_sent_every_time(self):
        path = temp_file(self, b"Subject: hi\n\nbody\n")
        result = self.source(M + ["-F", path, "-d", "-m", "2"])
        self.assertEqual(self.messages(result), [b"Subject: hi\r\n\r\nbody\r\n\r\n.\r\n"] * 2)


class LmtpTests(SessionCase):

    def test_lhlo_and_one_reply_per_recipient(self):
        result = self.source(M + ["-L", "-r", "3"], lmtp=True)
        self.assertOk(result)
        conn = result.connections[0]
        self.assertEqual(conn.commands()[0], b"LHLO client.example\r\n")
        after_dot = [data for kind, data in conn.events[conn.events.index(
            ("D", conn.messages()[0])) + 1:]]
        self.assertEqual(after_dot, [b"250 2.0.0 Ok\r\n"] * 3 + [b"QUIT\r\n", b"221 Bye\r\n"])

    def test_o_skips_lhlo(self):
        result = self.source(M + ["-L", "-o"], lmtp=True)
        self.assertOk(result)
        self.assertEqual(self.commands(result)[0], b"MAIL FROM:<foo@client.example>\r\n")

    def test_multi_line_lhlo_reply(self):
        result = self.source(M + ["-L"], {"helo": b"250-a\r\n250-PIPELINING\r\n250 c\r\n"},
                             lmtp=True)
        self.assertOk(result)

    def test_a_rejected_recipient_still_counts(self):
        # Postfix's tool waits for one reply per RCPT sent, accepted or not.
        # This server sends one (for the accepted one) and hangs up: the
        # client was still waiting for the second.
        replies = {"rcpt": seq(b"550 no\r\n", b"250 ok\r\n"), "dot": Close(b"250 ok\r\n")}
        result = self.source(M + ["-L", "-r", "2", "-A"], replies, lmtp=True)
        self.assertEqual(result.rc, 1)
        self.assertEqual(result.stderr, b"smtp-source: warning: recipient rejected: 550 no\n"
                         b"smtp-source: fatal: lost connection while sending message\n")
        self.assertEqual(self.commands(result)[-1], b"DATA\r\n")


class CounterTests(SessionCase):

    def test_counter(self):
        self.assertOk(self.source(M + ["-c", "-m", "3"]), b"1\r2\r3\r\n", connections=3)
        self.assertOk(self.source(M + ["-c", "-m", "3", "-d"]), b"1\r2\r3\r\n")
        result = self.source(M + ["-c", "-m", "12", "-s", "3"])
        self.assertOk(result, b"".join(b"%d\r" % n for n in range(1, 13)) + b"\n", 12)

    def test_counter_without_messages(self):
        result = self.source(M + ["-c", "-A", "-m", "2"], {"rcpt": b"550 no\r\n"})
        self.assertEqual((result.rc, result.stdout), (0, b"\n"))

    def test_counter_counts_a_sent_message_even_if_rejected(self):
        result = self.source(M + ["-c", "-m", "2", "-d"],
                             {"dot": seq(b"250 ok\r\n", b"552 5.3.4 too big\r\n")})
        self.assertEqual((result.rc, result.stdout), (1, b"1\r2\r"))

    def test_no_counter_no_output(self):
        self.assertEqual(self.source(M + ["-m", "2"]).stdout, b"")


class SessionCountTests(SessionCase):

    def test_parallel_sessions(self):
        # The first two connections get their greeting only once both are
        # open: one session at a time would never get past it.  (Timing
        # alone proves nothing: a session may end before the other starts.)
        both = threading.Barrier(2, timeout=support.TIMEOUT)
        met = []

        def greeting(conn, stage):
            if conn.index < 2:
                try:
                    both.wait()
                    met.append(conn.index)
                except threading.BrokenBarrierError:
                    pass
            return b"220 fake ESMTP\r\n"
        result = self.source(M + ["-s", "2", "-m", "4"], {"greeting": greeting})
        self.assertOk(result, connections=4)
        self.assertEqual(sorted(met), [0, 1])
        self.assertLessEqual(max_parallel(result.connections), 2)

    def test_never_more_sessions_than_messages(self):
        result = self.source(M + ["-s", "5", "-m", "2"])
        self.assertOk(result, connections=2)
        # All five sessions claimed a message first: the count went to -3
        # before the first message went out.  A session that has finished
        # claims again (-4), so the other message may show -3 or -4, on
        # either connection; Postfix's smtp-source does the same.
        received = sorted((conn.times[i], data) for conn in result.connections
                          for i, (kind, data) in enumerate(conn.events) if kind == "D")
        self.assertEqual(len(received), 2)
        self.assertRegex(received[0][1], rb"\.[0-9a-f]{4}\.fffffffd@client\.example>")
        self.assertRegex(received[1][1], rb"\.[0-9a-f]{4}\.ffffff(fd|fc)@client\.example>")

    def test_parallel_sessions_with_d(self):
        result = self.source(M + ["-s", "2", "-m", "3", "-d"])
        self.assertOk(result, connections=2)
        self.assertEqual(sorted(len(c.messages()) for c in result.connections), [1, 2])
        for conn in result.connections:
            self.assertEqual(conn.commands()[-1], b"QUIT\r\n")


class DelayTests(SessionCase):

    def test_w_waits_after_every_message(self):
        result = self.source(M + ["-w", "1", "-m", "2"])
        self.assertOk(result, connections=2)
        first, second = result.connections
        self.assertGreaterEqual(second.times[0] - first.times[0], 0.9)
        self.assertGreaterEqual(result.elapsed, 1.9)          # also after the last one
        self.assertLess(result.elapsed, 5)

    def test_w_with_d(self):
        result = self.source(M + ["-w", "1", "-m", "2", "-d"])
        conn = result.connections[0]
        mails = [conn.times[i] for i, (kind, data) in enumerate(conn.events)
                 if data.startswith(b"MAIL")]
        quit_time = conn.times[conn.events.index(("C", b"QUIT\r\n"))]
        self.assertGreaterEqual(mails[1] - mails[0], 0.9)
        self.assertLess(quit_time - mails[1], 0.9)            # QUIT right after the last
        self.assertGreaterEqual(result.elapsed, 1.9)

    def test_r_waits_at_most_the_interval(self):
        result = self.source(M + ["-R", "1", "-m", "3"])
        self.assertOk(result, connections=3)
        self.assertLess(result.elapsed, 3 + 2)


class EndpointTests(SessionCase):

    def test_ipv6(self):
        for args in (M, M + ["-6"]):
            result = self.source(args, family="inet6")
            self.assertOk(result)
            self.assertEqual(result.connections[0].end, "reset")

    def test_unix(self):
        result = self.source(M + ["-r", "2"], family="unix")
        self.assertOk(result)
        self.assertEqual(len(self.commands(result)), 6)

    def test_inet_prefix(self):
        server = FakeServer().start(self)
        result = run_tool(OURS, M + ["inet:" + server.target], server)
        self.assertOk(result)

    def test_window_size_changes_nothing_on_the_wire(self):
        self.assertOk(self.source(M + ["-T", "4096", "-l", "100000"]))


class VerboseTests(SessionCase):

    def test_verbose_conversation(self):
        result = self.source(M + ["-v"], {"helo": b"250-fake\r\n250 \tx\r\n"})
        self.assertEqual(result.rc, 0)
        lines = result.stderr.decode().splitlines()
        self.assertEqual(lines[:2], ["smtp-source: name_mask: all",
                                     "smtp-source: smtp_stream_setup: maxtime=300 "
                                     "enable_deadline=0 min_data_rate=0"])
        mss = re.fullmatch(r"smtp-source: vstream_tweak_tcp: TCP_MAXSEG (\d+)", lines[2])
        self.assertTrue(mss, lines[2])
        self.assertEqual(lines[3], "smtp-source: fd=3: stream buffer size old=0 new=%d"
                         % (4 * int(mss.group(1))))
        self.assertEqual(lines[4:], ["smtp-source: " + text for text in (
            "<<< 220 fake ESMTP", "HELO client.example", "<<< 250-fake", "<<< 250 ?x",
            "MAIL FROM:<foo@client.example>", "<<< 250 2.1.0 Ok",
            "RCPT TO:<foo@client.example>", "<<< 250 2.1.5 Ok", "DATA", "<<< 354 go",
            ".", "<<< 250 2.0.0 Ok", "QUIT", "<<< 221 Bye")])

    def test_verbose_unix_has_no_tcp_lines(self):
        result = self.source(M + ["-v", "-o"], family="unix")
        self.assertEqual(result.stderr.decode().splitlines()[:4], [
            "smtp-source: name_mask: all",
            "smtp-source: smtp_stream_setup: maxtime=300 enable_deadline=0 min_data_rate=0",
            "smtp-source: <<< 220 fake ESMTP", "smtp-source: MAIL FROM:<foo@client.example>"])

    def test_verbose_shows_non_printables_as_question_marks(self):
        result = self.source(M + ["-v", "-o", "-f", "a\tb\x01"], family="unix")
        self.assertIn(b"smtp-source: MAIL FROM:<a?b?>\n", result.stderr)
        self.assertIn(b"MAIL FROM:<a\tb\x01>\r\n", self.commands(result))

    def test_verbose_eof(self):
        result = self.source(M + ["-v"], {"mail": Close(b"250-partial\r\n")}, family="unix")
        self.assertTrue(result.stderr.endswith(
            b"smtp-source: <<< 250-partial\nsmtp-source: smtp_get: EOF\n"
            b"smtp-source: fatal: lost connection while sending sender\n"), result.stderr)


def max_parallel(connections):
    """The most connections that were open at the same time."""
    spans = sorted((c.times[0], c.times[-1]) for c in connections)
    best = 0
    for start, _ in spans:
        best = max(best, sum(1 for s, e in spans if s <= start <= e))
    return best


if __name__ == "__main__":
    unittest.main()
