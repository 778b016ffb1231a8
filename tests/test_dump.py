"""smtpcore.dump: the pieces of a capture record."""

import os
import time
import unittest

from smtpcore import dump, messages


class UnescapeTest(unittest.TestCase):
    """-S start strings, as Postfix's smtp-sink expands them."""

    def test_table(self):
        cases = {r"From x\n": b"From x\n", r"\101\102C\n": b"ABC\n",
                 r"\a\b\f\r\t\v\\|": b"\x07\x08\x0c\r\t\x0b\\|",
                 r"\q\x41\e|": b"qx41e|", "tail\\": b"tail", r"\1014|\0|after": b"A4|",
                 r"\7\77\777\400|": b"\x07?\xff", "": b"", "plain": b"plain"}
        for text, expected in cases.items():
            self.assertEqual(dump.unescape(text), expected, text)

    def test_undecodable_argument_bytes_survive(self):
        self.assertEqual(dump.unescape(os.fsdecode(b"\xff\\n")), b"\xff\n")


class HeaderPiecesTest(unittest.TestCase):
    def test_printable(self):
        self.assertEqual(messages.printable(b"a\tb\x00c\x7f\xc3\xa9 ~"), b"a?b?c??? ~")

    def test_mail_date_pads_the_day(self):
        when = time.mktime((2026, 3, 5, 7, 8, 10, 0, 0, -1))
        self.assertEqual(dump.mail_date(when)[:25], "Thu,  5 Mar 2026 07:08:10")
        self.assertRegex(dump.mail_date(when), r" [+-]\d{4} \([^)]+\)$")

    def test_expand_template(self):
        when = time.mktime((2026, 11, 22, 3, 56, 4, 0, 0, -1))
        self.assertEqual(dump.expand_template("d/%Y%m%d%H/%M.", when), b"d/2026112203/56.")
        self.assertEqual(dump.expand_template("%Q%%x", when), b"%Q%x")


if __name__ == "__main__":
    unittest.main()
