"""smtpcore.integrity: the line the source adds and the sink checks."""

import unittest

from smtpcore import integrity


class IntegrityTest(unittest.TestCase):
    def message(self, seq, body=b"Subject: x\r\n\r\nhello\r\n", run=b"0123456789abcdef",
                count=3):
        return integrity.header(run, seq, count, body) + body

    def test_round_trip(self):
        m = self.message(1)
        self.assertTrue(m.startswith(b"X-Smtp-Integrity: run=0123456789abcdef; seq=1; "
                                     b"count=3; sha256="))
        run, seq, count, digest, rest = integrity.parse(m)
        self.assertEqual((run, seq, count, rest), ("0123456789abcdef", 1, 3,
                                                   b"Subject: x\r\n\r\nhello\r\n"))

    def test_counts(self):
        v = integrity.Verifier()
        self.assertEqual(v.check(self.message(0)), "ok")
        self.assertEqual(v.check(self.message(0)), "duplicate")
        bad = self.message(1).replace(b"hello", b"jello")
        self.assertEqual(v.check(bad), "corrupt")
        self.assertIsNone(v.check(b"Subject: plain\r\n\r\nx\r\n"))
        self.assertEqual(v.totals(), {"0123456789abcdef": {
            "ok": 1, "corrupt": 1, "duplicate": 1, "missing": 1, "count": 3}})
        self.assertEqual(v.unmarked, 1)

    def test_message_check_in_any_split(self):
        # The DATA stream split at every place, and in single octets: the
        # dots after CRLF, the CRLF before the "." line and the line's own
        # CRLF fall on piece boundaries somewhere.
        body = b".lead\r\n..two\r\n.\r\nmid . dot\r\n\r\n.\r\n"
        for message, expected in ((self.message(2, body), ("0123456789abcdef", 2, 3, True)),
                                  (self.message(2, body)[:-5] + b"X\r\n",
                                   ("0123456789abcdef", 2, 3, False)),
                                  (b"Subject: plain\r\n\r\nx\r\n", None),
                                  (b"", None),
                                  (b"X-Smtp-Integrity: run=broken\r\n", None)):
            wire = (b"\r\n" + message).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"
            splits = [[wire[:i], wire[i:]] for i in range(len(wire) + 1)]
            splits.append([wire[i:i + 1] for i in range(len(wire))])
            for pieces in splits:
                check = integrity.MessageCheck(stuffed=True)
                for piece in pieces:
                    check.feed(piece)
                self.assertEqual(check.result(), expected, pieces)
            self.assertEqual(integrity.examine(message), expected)
            check = integrity.MessageCheck(stuffed=False)      # BDAT: as it is
            for i in range(0, len(message), 7):
                check.feed(message[i:i + 7])
            self.assertEqual(check.result(), expected)

    def test_message_check_keeps_no_long_first_line(self):
        check = integrity.MessageCheck(stuffed=False)
        check.feed(integrity.HEADER)
        for _ in range(100):
            check.feed(b"9" * 1000)
        self.assertLessEqual(len(check.head), integrity.MAX_LINE)
        self.assertIsNone(check.result())

    def test_new_run_ids_differ(self):
        self.assertNotEqual(integrity.new_run_id(), integrity.new_run_id())
        self.assertRegex(integrity.new_run_id(), rb"^[0-9a-f]{16}$")


if __name__ == "__main__":
    unittest.main()
