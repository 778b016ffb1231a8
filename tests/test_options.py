"""smtpcore.options: getopt and atoi as the C library does them."""

import unittest

from smtpcore import options


class AtoiTest(unittest.TestCase):
    def test_values(self):
        cases = {"5": 5, "5x": 5, " 7": 7, "\t+3": 3, "-1": -1, "abc": 0, "": 0,
                 "0x10": 0, "-": 0, "1.9": 1, "99999999999": 1215752191,
                 "4294967296": 0, "2147483648": -2147483648}
        for text, value in cases.items():
            self.assertEqual(options.atoi(text), value, text)

    def test_alldig(self):
        self.assertTrue(options.alldig("0123"))
        for text in ("", "1a", " 1", "-1", "\u0661"):
            self.assertFalse(options.alldig(text), text)


class ParseTest(unittest.TestCase):
    def test_posix_order(self):
        opts, rest = options.parse(["-c", "-m5", "-v", "host:1", "-d", "x"], "+cm:vd:")
        self.assertEqual(opts, [("c", None), ("m", "5"), ("v", None)])
        self.assertEqual(rest, ["host:1", "-d", "x"])

    def test_double_dash_and_lone_dash(self):
        self.assertEqual(options.parse(["-c", "--", "-x"], "+c"), ([("c", None)], ["-x"]))
        self.assertEqual(options.parse(["-", "-c"], "+c"), ([], ["-", "-c"]))

    def test_glibc_complaints(self):
        with self.assertRaises(options.UsageError) as cm:
            options.parse(["-Z"], "+cm:")
        self.assertEqual(cm.exception.complaint, "invalid option -- 'Z'")
        with self.assertRaises(options.UsageError) as cm:
            options.parse(["-c", "-m"], "+cm:")
        self.assertEqual(cm.exception.complaint, "option requires an argument -- 'm'")

    def test_split_list(self):
        self.assertEqual(options.split_list(" helo,,MAIL\trcpt\r\n.,"),
                         ["helo", "MAIL", "rcpt", "."])
        self.assertEqual(options.split_list(",,,"), [])



class IncrementalTest(unittest.TestCase):
    """Options before a bad one are seen first, as with getopt(3) -- so an
    earlier fatal option wins over a later unknown one."""

    def test_order(self):
        parser = options.GetOpt(["-c", "-m", "0", "-Z", "x"], "+cm:")
        seen = []
        with self.assertRaises(options.UsageError):
            for pair in parser:
                seen.append(pair)
        self.assertEqual(seen, [("c", None), ("m", "0")])

    def test_long_option_is_dash_letters(self):
        with self.assertRaises(options.UsageError) as cm:
            list(options.GetOpt(["--help"], "+c"))
        self.assertEqual(cm.exception.complaint, "invalid option -- '-'")



class LongOptionTest(unittest.TestCase):
    """Our extensions; anything else stays what getopt(3) makes of it."""

    LONG = ("report=", "integrity")

    def test_forms(self):
        opts, rest = options.parse(["--report=json", "-c", "--integrity", "--report", "text",
                                    "host"], "+c", self.LONG)
        self.assertEqual(opts, [("--report", "json"), ("c", None), ("--integrity", None),
                                ("--report", "text")])
        self.assertEqual(rest, ["host"])

    def test_complaints(self):
        cases = {("--report",): "option '--report' requires an argument",
                 ("--integrity=1",): "option '--integrity' doesn't allow an argument",
                 ("--reportx",): "invalid option -- '-'",
                 ("--help",): "invalid option -- '-'"}
        for args, complaint in cases.items():
            with self.assertRaises(options.UsageError) as cm:
                options.parse(list(args), "+c", self.LONG)
            self.assertEqual(cm.exception.complaint, complaint, args)

    def test_operands_end_options(self):
        opts, rest = options.parse(["host", "--report=x"], "+c", self.LONG)
        self.assertEqual((opts, rest), ([], ["host", "--report=x"]))


if __name__ == "__main__":
    unittest.main()
