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

    def test_new_run_ids_differ(self):
        self.assertNotEqual(integrity.new_run_id(), integrity.new_run_id())
        self.assertRegex(integrity.new_run_id(), rb"^[0-9a-f]{16}$")


if __name__ == "__main__":
    unittest.main()
