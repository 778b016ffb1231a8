"""smtpcore.options: getopt and atoi as the C library does them."""

import os
import unittest

from smtpcore import options


def run(args, optstring, long_options=()):
    """(options seen, complaint or None, operands) -- the options seen are
    those handed out before a UsageError, as a script would apply them."""
    parser = options.GetOpt(args, optstring, long_options)
    seen = []
    try:
        for pair in parser:
            seen.append(pair)
    except options.UsageError as err:
        return seen, err.complaint, parser.operands
    return seen, None, parser.operands


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
        self.assertEqual(options.parse(["--"], "+c"), ([], []))
        self.assertEqual(options.parse(["--", "--", "-c"], "+c"), ([], ["--", "-c"]))
        self.assertEqual(options.parse(["host", "--", "-c"], "+c"), ([], ["host", "--", "-c"]))
        self.assertEqual(options.parse(["-c", "-", "-Z"], "+c"), ([("c", None)], ["-", "-Z"]))
        # As a value, "--" and "-" are plain text.
        self.assertEqual(options.parse(["-m", "--", "-c", "x"], "+cm:"),
                         ([("m", "--"), ("c", None)], ["x"]))
        self.assertEqual(options.parse(["-m", "-", "x"], "+cm:"), ([("m", "-")], ["x"]))
        self.assertEqual(options.parse(["-m", "--help"], "+cm:"), ([("m", "--help")], []))

    def test_empty_values(self):
        self.assertEqual(options.parse(["-h", "", "-c"], "+ch:"), ([("h", ""), ("c", None)], []))
        self.assertEqual(options.parse(["-c", "", "-c"], "+ch:"), ([("c", None)], ["", "-c"]))

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

    def test_bad_value_before_unknown_option(self):
        # "-m abc" is fatal to the script before "-Z" is noticed.
        self.assertEqual(run(["-v", "-m", "abc", "-Z", "x"], "+vm:"),
                         ([("v", None), ("m", "abc")], "invalid option -- 'Z'", None))
        # A value runs to the end of its argument: -mabcX is m=abcX.
        self.assertEqual(run(["-mabcX", "-Z"], "+vm:"),
                         ([("m", "abcX")], "invalid option -- 'Z'", None))

    def test_missing_argument_of_the_last_option(self):
        self.assertEqual(run(["-c", "-m5", "-m"], "+cm:"),
                         ([("c", None), ("m", "5")], "option requires an argument -- 'm'",
                          None))
        self.assertEqual(run(["-c", "--report"], "+c", ("report=",)),
                         ([("c", None)], "option '--report' requires an argument", None))

    def test_clusters(self):
        self.assertEqual(run(["-cm5", "host"], "+cm:"),
                         ([("c", None), ("m", "5")], None, ["host"]))
        self.assertEqual(run(["-cm", "5", "host"], "+cm:"),
                         ([("c", None), ("m", "5")], None, ["host"]))
        # Letters before an unknown one in the same cluster are flags, and
        # count, as with getopt(3).
        self.assertEqual(run(["-cXm", "5"], "+cm:"),
                         ([("c", None)], "invalid option -- 'X'", None))
        self.assertEqual(run(["-vcXm5"], "+vcm:"),
                         ([("v", None), ("c", None)], "invalid option -- 'X'", None))
        self.assertEqual(run(["-c", "-cm"], "+cm:"),
                         ([("c", None), ("c", None)], "option requires an argument -- 'm'",
                          None))

    def test_colon_and_plus_are_not_options(self):
        self.assertEqual(run(["-:"], "+cm:"), ([], "invalid option -- ':'", None))
        self.assertEqual(run(["-c:"], "+cm:"), ([("c", None)], "invalid option -- ':'", None))
        self.assertEqual(run(["-+"], "+cm:"), ([], "invalid option -- '+'", None))
        self.assertEqual(run(["-c-"], "+cm:"), ([("c", None)], "invalid option -- '-'", None))

    def test_non_ascii_letter_is_named_by_its_first_byte(self):
        # getopt(3) reads bytes; glibc names the first byte of "é".
        seen, complaint, _ = run(["-c\u00e9"], "+c")
        self.assertEqual(seen, [("c", None)])
        self.assertEqual(os.fsencode(complaint),
                         b"invalid option -- '" + os.fsencode("\u00e9")[:1] + b"'")
        # An undecodable argv byte stays that byte.
        self.assertEqual(run(["-\udcff"], "+c"), ([], "invalid option -- '\udcff'", None))

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

    def test_abbreviations_are_unknown(self):
        # Python's getopt would take these as --report and --integrity.
        for args in (["--rep=json"], ["--r", "x"], ["--integ"], ["--report=x", "--i"],
                     ["--="], ["---"]):
            seen, complaint, _ = run(args, "+c", self.LONG)
            self.assertEqual(complaint, "invalid option -- '-'", args)
        self.assertEqual(run(["-c", "--he"], "+c", ("help",)),
                         ([("c", None)], "invalid option -- '-'", None))

    def test_values(self):
        self.assertEqual(run(["--report=", "--integrity"], "+c", self.LONG),
                         ([("--report", ""), ("--integrity", None)], None, []))
        self.assertEqual(run(["--report=a=b", "--report", "--integrity", "x"], "+c",
                             self.LONG),
                         ([("--report", "a=b"), ("--report", "--integrity")], None, ["x"]))
        self.assertEqual(run(["--integrity=", "x"], "+c", self.LONG),
                         ([], "option '--integrity' doesn't allow an argument", None))

    def test_operands_end_options(self):
        opts, rest = options.parse(["host", "--report=x"], "+c", self.LONG)
        self.assertEqual((opts, rest), ([], ["host", "--report=x"]))


if __name__ == "__main__":
    unittest.main()
