"""smtp_source.py when the server says no, or goes away.

Replies other than the expected one at each stage, with and without -A,
and connections lost at each stage: stderr, exit status, and what the
server saw afterwards (RSET, QUIT, or a reset), as in the reference notes
(PART B6).
"""

import unittest

from tests.fake_smtp import Close, seq
from tests.test_source_session import M, SessionCase

# stage -> (reply, complaint)
REJECTS = {
    "greeting": (b"554 5.7.1 go away\r\n", b"rejected at server banner: 554 5.7.1 go away"),
    "helo": (b"501 5.5.2 bad helo\r\n", b"HELO rejected: 501 5.5.2 bad helo"),
    "mail": (b"451 4.3.0 try later\r\n", b"sender rejected: 451 4.3.0 try later"),
    "rcpt": (b"550 5.1.1 unknown user\r\n", b"recipient rejected: 550 5.1.1 unknown user"),
    "data": (b"554 5.5.1 no data\r\n", b"data rejected: 554 5.5.1 no data"),
    "dot": (b"552 5.3.4 too big\r\n", b"end of data rejected: 552 5.3.4 too big"),
}
# stage -> what "lost connection while ..." says
LOST = {"greeting": b"reading server greeting", "helo": b"sending HELO",
        "mail": b"sending sender", "rcpt": b"sending recipient",
        "data": b"sending DATA command", "dot": b"sending message", "quit": b"sending message"}


def verbs(result, index=0):
    return [c.split(b" ")[0].strip() for c in result.connections[index].commands()]


class FatalRejectTests(SessionCase):

    def test_each_stage(self):
        for stage, (reply, complaint) in REJECTS.items():
            with self.subTest(stage=stage):
                result = self.source(M, {stage: reply})
                self.assertEqual((result.rc, result.stdout, result.stderr),
                                 (1, b"", b"smtp-source: fatal: " + complaint + b"\n"))
                # No QUIT: the connection is dropped with a reset.
                self.assertNotIn(b"QUIT", verbs(result))
                self.assertEqual(result.connections[0].end, "reset")

    def test_data_wants_354_exactly(self):
        for reply in (b"250 ok\r\n", b"399 whatever\r\n", b"3540 x\r\n"):
            with self.subTest(reply=reply):
                result = self.source(M, {"data": reply})
                shown = reply.strip().replace(b"3540", b"0")
                self.assertEqual(result.stderr, b"smtp-source: fatal: data rejected: "
                                 + shown + b"\n")
                self.assertEqual(result.connections[0].messages(), [])

    def test_421_greeting(self):
        result = self.source(M, {"greeting": b"421 4.3.2 busy\r\n"})
        self.assertEqual(result.stderr, b"smtp-source: fatal: rejected at server banner: "
                         b"421 4.3.2 busy\n")

    def test_multi_line_and_odd_replies(self):
        table = {
            b"550-5.7.1 first line\r\n550-5.7.1 second\r\n550 5.7.1 last\r\n":
                b"550 5.7.1 first line?5.7.1 second?5.7.1 last",
            b"hello there\r\n": b"0 hello there",
            b"2200 x\r\n": b"0 x",
            b"550 tab\there \xc3\xa9\r\n": b"550 tab?here ??",
        }
        for reply, shown in table.items():
            with self.subTest(reply=reply):
                result = self.source(M, {"rcpt": reply})
                self.assertEqual(result.stderr,
                                 b"smtp-source: fatal: recipient rejected: " + shown + b"\n")

    def test_lmtp_stops_at_the_first_bad_recipient_reply(self):
        result = self.source(M + ["-L", "-r", "3"], {"dot": seq(
            b"250 ok\r\n", b"452 4.2.2 full\r\n", b"250 ok3\r\n")}, lmtp=True)
        self.assertEqual((result.rc, result.stderr),
                         (1, b"smtp-source: fatal: end of data rejected: 452 4.2.2 full\n"))

    def test_quit_reply_is_not_judged(self):
        result = self.source(M, {"quit": b"500 no quit for you\r\n"})
        self.assertEqual((result.rc, result.stderr), (0, b""))


class AllowedRejectTests(SessionCase):
    """-A: a warning, and the session goes on."""

    def warned(self, result, *complaints):
        self.assertEqual(result.stderr, b"".join(b"smtp-source: warning: " + c + b"\n"
                                                 for c in complaints))

    def test_greeting_and_helo_rejects_are_ignored(self):
        for stage in ("greeting", "helo"):
            with self.subTest(stage=stage):
                reply, complaint = REJECTS[stage]
                result = self.source(M + ["-A"], {stage: reply})
                self.assertEqual(result.rc, 0)
                self.warned(result, complaint)
                self.assertEqual(verbs(result), [b"HELO", b"MAIL", b"RCPT", b"DATA", b"QUIT"])

    def test_mail_and_data_rejects_lead_to_rset(self):
        expected = {"mail": [b"HELO", b"MAIL", b"RSET", b"QUIT"],
                    "data": [b"HELO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"QUIT"]}
        for stage, commands in expected.items():
            with self.subTest(stage=stage):
                reply, complaint = REJECTS[stage]
                result = self.source(M + ["-A", "-c"], {stage: reply})
                self.assertEqual((result.rc, result.stdout), (0, b"\n"))
                self.warned(result, complaint)
                self.assertEqual(verbs(result), commands)

    def test_some_recipients_rejected(self):
        result = self.source(M + ["-A", "-r", "3"], {"rcpt": seq(b"550 no\r\n", b"250 ok\r\n")})
        self.assertEqual(result.rc, 0)
        self.warned(result, b"recipient rejected: 550 no")
        self.assertEqual(verbs(result), [b"HELO", b"MAIL", b"RCPT", b"RCPT", b"RCPT",
                                         b"DATA", b"QUIT"])

    def test_all_recipients_rejected(self):
        result = self.source(M + ["-A", "-r", "2", "-d", "-m", "2"], {"rcpt": b"550 no\r\n"})
        self.assertEqual(result.rc, 0)
        self.warned(result, *[b"recipient rejected: 550 no"] * 4)
        self.assertEqual(verbs(result), [b"HELO"] + [b"MAIL", b"RCPT", b"RCPT", b"RSET"] * 2
                         + [b"QUIT"])

    def test_end_of_data_reject_counts_as_sent(self):
        result = self.source(M + ["-A", "-c", "-d", "-m", "2"], {"dot": REJECTS["dot"][0]})
        self.assertEqual((result.rc, result.stdout), (0, b"1\r2\r\n"))
        self.warned(result, REJECTS["dot"][1], REJECTS["dot"][1])
        self.assertNotIn(b"RSET", verbs(result))

    def test_rset_rejected(self):
        result = self.source(M + ["-A"], {"mail": b"550 no\r\n", "rset": b"500 no rset\r\n"})
        self.assertEqual(result.rc, 0)
        self.warned(result, b"sender rejected: 550 no", b"rset rejected: 500 no rset")

    def test_lmtp_recipient_replies(self):
        result = self.source(M + ["-A", "-L", "-r", "3"], {"dot": seq(
            b"250 ok\r\n", b"452 4.2.2 full\r\n", b"250 ok3\r\n")}, lmtp=True)
        self.assertEqual(result.rc, 0)
        self.warned(result, b"end of data rejected: 452 4.2.2 full")
        self.assertEqual(verbs(result)[-1], b"QUIT")

    def test_lost_connection_is_still_fatal(self):
        result = self.source(M + ["-A"], {"data": Close(b"354 go\r\n")})
        self.assertEqual((result.rc, result.stderr),
                         (1, b"smtp-source: fatal: lost connection while sending message\n"))


class LostConnectionTests(SessionCase):

    def test_each_stage(self):
        for stage, text in LOST.items():
            with self.subTest(stage=stage):
                result = self.source(M + ["-c"], {stage: None})
                self.assertEqual((result.rc, result.stderr), (
                    1, b"smtp-source: fatal: lost connection while " + text + b"\n"))
                # -c: the message counts once its "." is sent; no final newline.
                self.assertEqual(result.stdout, b"1\r" if stage in ("dot", "quit") else b"")

    def test_lhlo(self):
        result = self.source(M + ["-L"], {"helo": None}, lmtp=True)
        self.assertEqual(result.stderr, b"smtp-source: fatal: lost connection while sending LHLO\n")

    def test_partial_reply(self):
        result = self.source(M, {"greeting": Close(b"220 partial")})
        self.assertEqual(result.stderr, b"smtp-source: fatal: lost connection while "
                         b"reading server greeting\n")

    def test_after_rset_and_quit(self):
        # RSET and QUIT count as part of sending the message.
        for replies in ({"mail": b"550 no\r\n", "rset": None},
                        {"rcpt": b"550 no\r\n", "quit": None}):
            with self.subTest(replies=replies):
                result = self.source(M + ["-A"], replies)
                self.assertTrue(result.stderr.endswith(
                    b"smtp-source: fatal: lost connection while sending message\n"))

    def test_parallel_sessions_stop_at_the_first_fatal(self):
        # A MAIL is refused (421, and the server hangs up): the whole run
        # ends at once, with one fatal message; other sessions are cut off.
        result = self.source(M + ["-s", "3", "-m", "30"], {"mail": seq(Close(b"421 bye\r\n"))})
        self.assertEqual((result.rc, result.stderr),
                         (1, b"smtp-source: fatal: sender rejected: 421 bye\n"))
        self.assertLessEqual(len(result.connections), 3)


if __name__ == "__main__":
    unittest.main()
