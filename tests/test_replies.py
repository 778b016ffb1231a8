"""smtpcore.replies: reading SMTP replies as Postfix's smtp-source does.

The reader works on a real connected socket pair; each test writes what a
server would send and checks what the client makes of it.
"""

import socket
import threading
import unittest

from smtpcore import messages, replies
from tests import support


class ReaderCase(unittest.TestCase):

    def setUp(self):
        self.server, client = socket.socketpair()
        self.addCleanup(self.server.close)
        self.addCleanup(client.close)
        client.settimeout(support.TIMEOUT)
        self.reader = replies.ReplyReader(client)

    def send(self, data, close=False):
        self.server.sendall(data)
        if close:
            self.server.shutdown(socket.SHUT_WR)

    def read(self, data, close=False):
        self.send(data, close)
        return self.reader.read()


class SingleLineTests(ReaderCase):

    def test_plain_reply(self):
        reply = self.read(b"250 2.1.0 Ok\r\n")
        self.assertEqual(reply.code, 250)
        self.assertEqual(reply.text(), b"2.1.0 Ok")
        self.assertEqual(str(reply), "250 2.1.0 Ok")

    def test_bare_lf_ends_a_line(self):
        self.assertEqual(str(self.read(b"354 go\n")), "354 go")

    def test_code_alone_keeps_a_space(self):
        self.assertEqual(str(self.read(b"501\r\n")), "501 ")

    def test_trailing_carriage_returns_are_dropped(self):
        self.assertEqual(str(self.read(b"501 x\r\r\n")), "501 x")
        self.assertEqual(str(self.read(b"501 x\r \r\n")), "501 x? ")

    def test_trailing_blanks_are_kept(self):
        self.assertEqual(str(self.read(b"501 trailing   \r\n")), "501 trailing   ")

    def test_white_space_after_the_code_is_skipped(self):
        self.assertEqual(str(self.read(b"501\ttab\there\r\n")), "501 tab?here")
        self.assertEqual(str(self.read(b"501      spaces\r\n")), "501 spaces")

    def test_non_printable_bytes_show_as_question_marks(self):
        self.assertEqual(str(self.read(b"501 8bit \xc3\xa9 \x01 \x7f\r\n")),
                         "501 8bit ?? ? ?")
        self.assertEqual(str(self.read(b"501 x\x0b\x0c\r\n")), "501 x??")

    def test_nul_ends_the_text(self):
        self.assertEqual(str(self.read(b"501 nul\x00after\r\n")), "501 nul")


class CodeTests(ReaderCase):

    def test_no_code_is_code_zero(self):
        reply = self.read(b"hello there\r\n")
        self.assertEqual((reply.code, str(reply)), (0, "0 hello there"))

    def test_only_exactly_three_digits_make_a_code(self):
        self.assertEqual(str(self.read(b"2200 x\r\n")), "0 x")
        self.assertEqual(str(self.read(b"50 x\r\n")), "0 x")

    def test_leading_space_means_no_code(self):
        self.assertEqual(str(self.read(b" 501 lead\r\n")), "0 501 lead")

    def test_empty_line(self):
        self.assertEqual(str(self.read(b"\r\n")), "0 ")


class MultiLineTests(ReaderCase):

    def test_lines_are_joined_and_shown_with_question_marks(self):
        reply = self.read(b"550-5.7.1 first line\r\n550-5.7.1 second\r\n550 5.7.1 last\r\n")
        self.assertEqual(reply.code, 550)
        self.assertEqual(reply.text(), b"5.7.1 first line\n5.7.1 second\n5.7.1 last")
        self.assertEqual(str(reply), "550 5.7.1 first line?5.7.1 second?5.7.1 last")

    def test_the_last_line_gives_the_code(self):
        reply = self.read(b"250-ok\r\n501 bad\r\n")
        self.assertEqual((reply.code, str(reply)), (501, "501 ok?bad"))
        reply = self.read(b"501-ok\r\n250 good\r\n")
        self.assertEqual(reply.code, 250)

    def test_a_dash_without_a_code_continues(self):
        self.assertEqual(str(self.read(b"-foo\r\n501 bar\r\n")), "501 foo?bar")

    def test_empty_texts(self):
        self.assertEqual(str(self.read(b"501-\r\n501 \r\n")), "501 ?")

    def test_bare_lf_lines(self):
        self.assertEqual(str(self.read(b"501-first\n501 last\n")), "501 first?last")

    def test_reply_split_into_single_bytes(self):
        data = b"250-a\r\n250 b\r\n"

        def trickle():
            for i in range(len(data)):
                self.server.send(data[i:i + 1])
        writer = threading.Thread(target=trickle)
        writer.start()
        self.addCleanup(writer.join, support.TIMEOUT)
        reply = self.reader.read()
        self.assertEqual((reply.code, str(reply)), (250, "250 a?b"))

    def test_replies_in_one_packet_are_read_one_at_a_time(self):
        self.send(b"250 one\r\n250-two\r\n250 two\r\n452 three\r\n")
        self.assertEqual(str(self.reader.read()), "250 one")
        self.assertEqual(str(self.reader.read()), "250 two?two")
        self.assertTrue(self.reader.buffer)
        self.assertEqual(str(self.reader.read()), "452 three")
        self.assertFalse(self.reader.buffer)

    def test_show_sees_each_line_as_it_is_read(self):
        shown = []
        self.send(b"250-first\r\n250-se\tcond\r\n", close=True)
        with self.assertRaises(replies.Lost):
            self.reader.read(shown.append)
        self.assertEqual(shown, ["250-first", "250-se?cond"])


class LimitTests(ReaderCase):

    def test_a_long_line_is_cut_and_the_rest_skipped(self):
        reply = self.read(b"250 " + b"A" * 20000 + b"\r\n250 next\r\n")
        self.assertEqual(len(str(reply)), replies.LINE_LIMIT)
        self.assertEqual(str(reply), "250 " + "A" * (replies.LINE_LIMIT - 4))
        self.assertEqual(str(self.reader.read()), "250 next")

    def test_line_limit_boundary(self):
        for length in (10239, 10240, 10241):
            line = b"250 " + b"A" * (length - 4)
            reply = self.read(line + b"\r\n")
            self.assertEqual(len(str(reply)), min(length, replies.LINE_LIMIT), length)

    def test_joined_text_stops_growing_past_the_limit(self):
        # Lines A..J (1000 bytes each) fit; K starts below the limit and is
        # kept whole; nothing after it is.
        lines = b"".join(b"501-" + bytes([65 + i]) * 1000 + b"\r\n" for i in range(12))
        text = str(self.read(lines + b"501 end\r\n"))
        pieces = text[4:].split("?")
        self.assertEqual([p[0] for p in pieces], list("ABCDEFGHIJK"))
        self.assertEqual(pieces[-1], "K" * 1000)

    def test_text_limit_boundary(self):
        for second, expected_end in ((5238, "B?"), (5239, "BB"), (5240, "BB")):
            data = b"501-" + b"A" * 5000 + b"\r\n501-" + b"B" * second + b"\r\n501 end\r\n"
            text = str(self.read(data))
            self.assertTrue(text.endswith(expected_end), (second, text[-5:]))
            self.assertNotIn("end", text)

    def test_ten_lines_of_a_thousand_fit(self):
        lines = b"".join(b"501-" + b"B" * 1000 + b"\r\n" for _ in range(10))
        self.assertTrue(str(self.read(lines + b"501 end\r\n")).endswith("B?end"))


class LostTests(ReaderCase):

    def test_eof_before_a_reply(self):
        self.send(b"", close=True)
        with self.assertRaises(replies.Lost):
            self.reader.read()

    def test_eof_in_mid_line(self):
        self.send(b"220 partial", close=True)
        with self.assertRaises(replies.Lost):
            self.reader.read()

    def test_eof_in_mid_reply(self):
        self.send(b"250-partial\r\n", close=True)
        with self.assertRaises(replies.Lost):
            self.reader.read()


class PrintableTests(unittest.TestCase):

    def test_printable(self):
        self.assertEqual(messages.printable(bytes(range(0x1e, 0x22)) + b"~\x7f\xff"),
                         b"?? !~??")


if __name__ == "__main__":
    unittest.main()
