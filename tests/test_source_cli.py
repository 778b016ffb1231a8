"""smtp_source.py's command line: usage, argument errors, endpoints.

Each case runs the script as a user would and checks stderr, stdout and the
exit status against what Postfix 3.7's smtp-source prints (the reference
notes, PART B1).  No server is involved, except a port that refuses.
"""

import os
import re
import socket
import sys
import unittest

from smtpcore import endpoints
from tests import support
from tests.fake_smtp import OURS, run_tool

USAGE = (b"smtp-source: fatal: usage: smtp-source -cdLNov -s sess -l msglen -m msgs "
         b"-C count -M myhostname -f from -t to -r rcptcount -R delay -w delay "
         b"host[:port]\n")


class CliCase(unittest.TestCase):

    def assertFails(self, args, stderr):
        result = run_tool(OURS, args)
        self.assertEqual((result.rc, result.stdout, result.stderr), (1, b"", stderr), args)
        return result


class UsageTests(CliCase):

    def test_usage(self):
        for args in ([], ["a", "b"], ["a", "-v"], ["-v"], ["-c", "-d"]):
            self.assertFails(args, USAGE)

    def test_getopt_complaints_come_first(self):
        self.assertFails(["-Z", "x"], b"smtp-source: invalid option -- 'Z'\n" + USAGE)
        self.assertFails(["-v", "-Z", "x"], b"smtp-source: invalid option -- 'Z'\n" + USAGE)
        self.assertFails(["-m"], b"smtp-source: option requires an argument -- 'm'\n" + USAGE)

    def test_options_take_effect_as_they_are_met(self):
        # A bad value is fatal before getopt reaches a later bad option.
        self.assertFails(["-s", "0", "-Z", "x"], b"smtp-source: fatal: bad session count: 0\n")
        self.assertFails(["-Z", "-s", "0", "x"], b"smtp-source: invalid option -- 'Z'\n" + USAGE)
        self.assertFails(["-M", "a..b", "--help"],
                         b"smtp-source: warning: valid_hostname: misplaced delimiter: a..b\n"
                         b"smtp-source: fatal: bad hostname: a..b\n")

    def test_unknown_long_options_are_glibc_getopt_errors(self):
        for args in (["--helpx"], ["--reportx", "x"], ["--report-x=json", "x"],
                     ["-c", "--x", "x"], ["-vc--x", "x"], ["-c--help", "x"],
                     ["--he"], ["--rep=json", "x"], ["--integ", "x"], ["-c", "--="]):
            with self.subTest(args=args):
                self.assertFails(args, b"smtp-source: invalid option -- '-'\n" + USAGE)

    def test_clusters(self):
        self.assertFails(["-cXm", "5", "x"], b"smtp-source: invalid option -- 'X'\n" + USAGE)
        self.assertFails(["-cm"], b"smtp-source: option requires an argument -- 'm'\n" + USAGE)
        self.assertFails(["-c:", "x"], b"smtp-source: invalid option -- ':'\n" + USAGE)
        self.assertFails(["-mabcX", "-Z"], b"smtp-source: fatal: bad message count: abcX\n")
        self.assertFails(["-c\u00e9", "x"], b"smtp-source: invalid option -- '"
                         + os.fsencode("\u00e9")[:1] + b"'\n" + USAGE)

    def test_double_dash_ends_the_options(self):
        port = support.free_port()
        self.assertFails(["-c", "--", "127.0.0.1:%d" % port],
                         b"smtp-source: fatal: connect: Connection refused\n")

    def test_an_option_value_may_look_like_a_long_option(self):
        port = support.free_port()
        self.assertFails(["-f", "--x", "127.0.0.1:%d" % port],
                         b"smtp-source: fatal: connect: Connection refused\n")

    def test_program_name_is_argv0(self):
        # Installed under another name, diagnostics carry that name.
        directory = support.temp_dir(self)
        link = os.path.join(directory, "my-source")
        os.symlink(support.SOURCE, link)
        result = support.run(support.python_cmd(link))
        self.assertEqual(result.stderr, USAGE.replace(b"smtp-source", link.encode()))


class NumberTests(CliCase):

    def test_bad_numbers(self):
        table = [("-s", "bad session count"), ("-m", "bad message count"),
                 ("-r", "bad recipient count"), ("-l", "bad message length"),
                 ("-C", "bad connection count"), ("-R", "bad random delay"),
                 ("-w", "bad fixed delay"), ("-T", "bad TCP window size")]
        for flag, complaint in table:
            for value in ("0", "abc", "-1", "0x10", ""):
                with self.subTest(flag=flag, value=value):
                    self.assertFails([flag, value, "x"], b"smtp-source: fatal: %s: %s\n"
                                     % (complaint.encode(), value.encode()))

    def test_w_and_r_exclude_each_other(self):
        text = b"smtp-source: fatal: do not use -w and -R options at the same time\n"
        self.assertFails(["-w", "1", "-R", "1", "x"], text)
        self.assertFails(["-R", "1", "-w", "1", "x"], text)
        self.assertFails(["-w", "1", "-R", "0", "x"], text)      # checked first
        self.assertFails(["-R", "0", "-w", "1", "x"], b"smtp-source: fatal: bad random delay: 0\n")

    def test_errors_come_in_command_line_order(self):
        self.assertFails(["-s", "0", "-m", "0", "x"], b"smtp-source: fatal: bad session count: 0\n")
        self.assertFails(["-m", "0", "-s", "0", "x"], b"smtp-source: fatal: bad message count: 0\n")


class FileTests(CliCase):

    def setUp(self):
        self.directory = support.temp_dir(self)
        self.message = os.path.join(self.directory, "m")
        with open(self.message, "wb") as handle:
            handle.write(b"x\n")

    def test_l_and_f_exclude_each_other(self):
        text = b"smtp-source: fatal: -l option cannot be used with -F\n"
        self.assertFails(["-l", "5", "-F", self.message, "x"], text)
        self.assertFails(["-F", self.message, "-l", "5", "x"], text)
        self.assertFails(["-F", self.message, "-l", "0", "x"], text)
        self.assertFails(["-l", "0", "-F", self.message, "x"],
                         b"smtp-source: fatal: bad message length: 0\n")

    def test_missing_file(self):
        missing = os.path.join(self.directory, "missing")
        text = b"smtp-source: fatal: open %s: No such file or directory\n" % missing.encode()
        self.assertFails(["-F", missing, "nosuchhost.invalid:25"], text)
        self.assertFails(["-v", "-F", missing, "x"], text)         # before name_mask
        self.assertFails(["-F", missing, "x", "y"], USAGE)         # after the usage check

    def test_directory(self):
        self.assertFails(["-F", self.directory, "x"], b"smtp-source: fatal: read %s: Is a directory\n"
                         % self.directory.encode())

    def test_only_the_last_file_is_read(self):
        missing = os.path.join(self.directory, "missing")
        self.assertFails(["-F", missing, "-F", self.message, "unix:" + missing],
                         b"smtp-source: fatal: connect: No such file or directory\n")


class HostnameTests(CliCase):

    def test_bad_host_names(self):
        table = {
            "bad host name": b"valid_hostname: invalid character 32(decimal): bad host name",
            "-x": b"valid_hostname: misplaced hyphen: -x",
            "x.": b"valid_hostname: misplaced delimiter: x.",
            "a..b": b"valid_hostname: misplaced delimiter: a..b",
            "1.2.3.4": b"valid_hostname: numeric hostname: 1.2.3.4",
            "": b"valid_hostname: empty hostname",
            "a\tb": b"valid_hostname: invalid character 9(decimal): a?b",
            "\xe9": b"valid_hostname: invalid character 195(decimal): ??",
            "a" * 64: b"valid_hostname: hostname label too long: " + b"a" * 64,
        }
        for name, warning in table.items():
            with self.subTest(name=name):
                shown = warning.rsplit(b": ", 1)[1] if name else b""
                self.assertFails(["-M", name, "x"], b"smtp-source: warning: " + warning
                                 + b"\nsmtp-source: fatal: bad hostname: " + shown + b"\n")

    def test_bad_address_literals(self):
        table = {
            "[1.2.3]": b"valid_ipv4_hostaddr: invalid octet count: 1.2.3",
            "[1.2.3.4": b"valid_mailhost_literal: ']' expected at end: [1.2.3.4",
            "[::1]": b"valid_ipv4_hostaddr: invalid character 58(decimal): ::1",
            "[1.2.3.4]x": b"valid_mailhost_literal: unexpected text after ']': [1.2.3.4]x",
            "[]": b"valid_ipv4_hostaddr: invalid octet count: ",
            "[ipv6:]": b"valid_ipv6_hostaddr: too few `:' in IPv6 address: ",
            "[ipv6:1.2.3.4]": b"valid_ipv6_hostaddr: malformed IPv4-in-IPv6 address: 1.2.3.4",
            "[" + "1" * 46 + "]": b"valid_mailhost_literal: too much text: [" + b"1" * 46 + b"]",
        }
        for literal, warning in table.items():
            with self.subTest(literal=literal):
                self.assertFails(["-M", literal, "x"], b"smtp-source: warning: " + warning
                                 + b"\nsmtp-source: fatal: bad address literal: "
                                 + literal.encode() + b"\n")

    def test_checked_when_parsed(self):
        text = (b"smtp-source: warning: valid_hostname: misplaced delimiter: a..b\n"
                b"smtp-source: fatal: bad hostname: a..b\n")
        self.assertFails(["-M", "a..b", "-s", "0", "x"], text)
        self.assertFails(["-M", "a..b"], text)
        self.assertFails(["-s", "0", "-M", "a..b", "x"], b"smtp-source: fatal: bad session count: 0\n")

    def test_good_names_get_as_far_as_connecting(self):
        port = support.free_port()
        for name in ("[10.1.2.3]", "[IPv6:::1]", "[ipv6:::1]", "a_b.example", "_", "x-y.example"):
            with self.subTest(name=name):
                self.assertFails(["-M", name, "127.0.0.1:%d" % port],
                                 b"smtp-source: fatal: connect: Connection refused\n")


class EndpointTests(CliCase):

    def test_bad_endpoints(self):
        table = {
            "127.0.0.1:abc": b"127.0.0.1:abc: Servname not supported for ai_socktype",
            "inet:127.0.0.1:abc": b"127.0.0.1:abc: Servname not supported for ai_socktype",
            "127.0.0.1:-1": b"127.0.0.1:-1: Servname not supported for ai_socktype",
            "nosuchhost.invalid:25": b"nosuchhost.invalid:25: Name or service not known",
            "": b": missing host information",
            "inet:": b": missing host information",
            ":25": b":25: missing host information",
            "[::1": b'[::1: missing "]"',
            "[::1]x": b'[::1]x: garbage after "]"',
            "a b:25": b"a b:25: valid hostname or network address required",
            "unix:/" + "x" * 120: b"unix-domain name too long: /" + b"x" * 120,
        }
        for endpoint, complaint in table.items():
            with self.subTest(endpoint=endpoint):
                self.assertFails([endpoint], b"smtp-source: fatal: " + complaint + b"\n")

    def test_address_family(self):
        self.assertFails(["-6", "127.0.0.1:25"], b"smtp-source: fatal: 127.0.0.1:25: "
                         b"Address family for hostname not supported\n")
        self.assertFails(["-4", "[::1]:25"], b"smtp-source: fatal: [::1]:25: "
                         b"Address family for hostname not supported\n")

    def test_refused_and_missing(self):
        port = support.free_port()
        refused = b"smtp-source: fatal: connect: Connection refused\n"
        for args in (["127.0.0.1:%d" % port], ["-A", "-s", "3", "-m", "5", "127.0.0.1:%d" % port],
                     ["-c", "127.0.0.1:%d" % port], ["127.0.0.1:%d" % (port + 65536)],
                     ["unix:"]):
            with self.subTest(args=args):
                self.assertFails(args, refused)
        directory = support.temp_dir(self)
        self.assertFails(["unix:" + os.path.join(directory, "missing.sock")],
                         b"smtp-source: fatal: connect: No such file or directory\n")

    def test_connect_retries(self):
        port = support.free_port()
        warning = b"smtp-source: warning: connect: Connection refused\n"
        fatal = b"smtp-source: fatal: connect: Connection refused\n"
        self.assertFails(["-C", "3", "127.0.0.1:%d" % port], 2 * warning + fatal)
        # One connection attempt at a time: the first session uses up its
        # tries before the second gets a turn.
        self.assertFails(["-C", "2", "-s", "2", "127.0.0.1:%d" % port], warning + fatal)

    def test_verbose_before_connecting(self):
        port = support.free_port()
        setup = b"smtp-source: smtp_stream_setup: maxtime=300 enable_deadline=0 min_data_rate=0\n"
        self.assertFails(["-v", "-C", "2", "127.0.0.1:%d" % port],
                         b"smtp-source: name_mask: all\n" + setup
                         + b"smtp-source: warning: connect: Connection refused\n" + setup
                         + b"smtp-source: fatal: connect: Connection refused\n")
        self.assertFails(["-v", "-4", "127.0.0.1:%d" % port],
                         b"smtp-source: name_mask: ipv4\n" + setup
                         + b"smtp-source: fatal: connect: Connection refused\n")
        self.assertFails(["-v", "-4", "-6", "127.0.0.1:25"],
                         b"smtp-source: name_mask: ipv6\nsmtp-source: fatal: 127.0.0.1:25: "
                         b"Address family for hostname not supported\n")
        self.assertFails(["-v", "-s", "0", "x"], b"smtp-source: fatal: bad session count: 0\n")


class ClientEndpointTests(unittest.TestCase):
    """smtpcore.endpoints.client_endpoint(): where smtp-source connects."""

    def test_default_port_is_smtp(self):
        for text in ("127.0.0.1", "inet:127.0.0.1", "127.0.0.1:", "[127.0.0.1]"):
            with self.subTest(text=text):
                self.assertEqual(endpoints.client_endpoint(text),
                                 (socket.AF_INET, ("127.0.0.1", 25)))
        family, address = endpoints.client_endpoint("[::1]")
        self.assertEqual((family, address[:2]), (socket.AF_INET6, ("::1", 25)))

    def test_ports(self):
        self.assertEqual(endpoints.client_endpoint("127.0.0.1:submission")[1][1], 587)
        self.assertEqual(endpoints.client_endpoint("127.0.0.1:99999")[1][1], 99999 % 65536)
        self.assertEqual(endpoints.client_endpoint("::1:2525")[1][:2], ("::1", 2525))
        self.assertEqual(endpoints.client_endpoint("[ipv6:::1]:2525")[1][:2], ("::1", 2525))

    def test_unix(self):
        self.assertEqual(endpoints.client_endpoint("unix:/tmp/x.sock"),
                         (socket.AF_UNIX, b"/tmp/x.sock"))
        self.assertEqual(endpoints.client_endpoint("unix:")[1], b"\0" * 108)

    def test_mailhost_literals(self):
        gripes = []
        self.assertTrue(endpoints.valid_mailhost_literal("[10.1.2.3]", gripes.append))
        self.assertTrue(endpoints.valid_mailhost_literal("[IPv6:2001:db8::1]", gripes.append))
        self.assertEqual(gripes, [])
        self.assertFalse(endpoints.valid_mailhost_literal("10.1.2.3", gripes.append))
        self.assertEqual(gripes, ["valid_mailhost_literal: '[' expected at start: 10.1.2.3"])


class ExtensionOptionTests(CliCase):
    """Our long options: --help, and strict values with Postfix-style fatals."""

    def test_help(self):
        for args in (["--help"], ["-c", "--help"], ["--help", "-Z"], ["--help", "a", "b"]):
            with self.subTest(args=args):
                result = run_tool(OURS, args)
                self.assertEqual((result.rc, result.stderr), (0, b""))
                lines = result.stdout.decode().splitlines()
                self.assertEqual(lines[0], USAGE.decode()[len("smtp-source: fatal: "):-1])
                for option in ("--help", "--report=text|json|html[:FILE]", "--rate=N[/s|/m]",
                               "--stats=SECONDS[,FILE]", "--start-at=TIME", "--merge-reports",
                               "--integrity", "--ehlo", "--pipelining", "--starttls",
                               "--tls", "--tls-verify", "--tls-ca=FILE", "--bdat=SIZE",
                               "--size"):
                    self.assertTrue(any(line.split()[:1] == [option] for line in lines),
                                    option)

    def test_every_long_option_is_documented(self):
        # In the docstring's EXTENSIONS, in --help, and as an entry of the
        # man page's EXTENSIONS section (".TP" then ".B \-\-name"...).
        import smtp_source
        with open(os.path.join(support.ROOT, "man", "smtp-source.1")) as handle:
            man = handle.read()
        extensions = man[man.index(".SH EXTENSIONS"):man.index(".SH DIFFERENCES")]
        help_text = support.run([sys.executable, support.SOURCE, "--help"]).stdout.decode()
        for name in smtp_source.LONG_OPTIONS:
            option = "--" + name.rstrip("=")
            with self.subTest(option=option):
                self.assertIn("\n    " + option, smtp_source.__doc__)
                self.assertIn("\n  " + option, help_text)
                self.assertRegex(extensions, r"\n\.TP\n\.B[IR]? %s\b"
                                 % re.escape(option.replace("-", "\\-")))

    def test_options_before_help_still_count(self):
        self.assertFails(["-s", "0", "--help"], b"smtp-source: fatal: bad session count: 0\n")

    def test_bad_values(self):
        table = [("--report", ["x", "", "JSON", "text ", "html:", "xml:out", ":json"]),
                 ("--stats", ["", "x", "-1", "1s", ",out", "1e3"]),
                 ("--start-at", ["x", "25:00:00", "9:00:00", "12:00", "1e9", "+5"]),
                 ("--rate", ["abc", "0", "-1", "5/h", "/s", "1e3", "0/s", " 5", "5 /s"]),
                 ("--bdat", ["0", "-1", "abc", "", "1k", "99999999999"])]
        for option, values in table:
            for value in values:
                for args in ([option + "=" + value, "x"], [option, value, "x"]):
                    with self.subTest(args=args):
                        self.assertFails(args, b"smtp-source: fatal: bad %s value: %s\n"
                                         % (option.encode(), value.encode()))

    def test_missing_values(self):
        for option in ("--report", "--rate", "--bdat", "--tls-ca", "--stats", "--start-at"):
            with self.subTest(option=option):
                self.assertFails([option], b"smtp-source: option '%s' requires an argument\n"
                                 % option.encode() + USAGE)

    def test_flags_take_no_value(self):
        for option in ("--help", "--integrity", "--ehlo", "--pipelining", "--starttls",
                       "--tls", "--tls-verify", "--size", "--merge-reports"):
            with self.subTest(option=option):
                self.assertFails([option + "=1", "x"],
                                 b"smtp-source: option '%s' doesn't allow an argument\n"
                                 % option.encode() + USAGE)

    def test_combinations(self):
        self.assertFails(["--tls", "--starttls", "x"],
                         b"smtp-source: fatal: use --tls or --starttls, not both\n")
        self.assertFails(["-o", "--starttls", "x"],
                         b"smtp-source: fatal: --starttls needs EHLO: do not use it with -o\n")
        for option in (["--tls-verify"], ["--tls-ca", "/nonexistent"]):
            self.assertFails(option + ["x"], b"smtp-source: fatal: --tls-verify and --tls-ca "
                             b"need --tls or --starttls\n")

    def test_files_that_cannot_be_written(self):
        # Opened before anything is sent: the run does not even connect.
        for option, path in (("--report=json:/nonexistent/r.json", b"/nonexistent/r.json"),
                             ("--stats=1,/nonexistent/s", b"/nonexistent/s")):
            with self.subTest(option=option):
                self.assertFails([option, "127.0.0.1:%d" % support.free_port()],
                                 b"smtp-source: fatal: open %s: No such file or directory\n"
                                 % path)

    def test_bad_ca_file(self):
        port = support.free_port()
        self.assertFails(["--tls", "--tls-ca", "/nonexistent/ca.pem", "127.0.0.1:%d" % port],
                         b"smtp-source: fatal: cannot load --tls-ca /nonexistent/ca.pem: "
                         b"No such file or directory\n")

    def test_good_values_get_as_far_as_connecting(self):
        port = support.free_port()
        for args in (["--report=json"], ["--report", "text"], ["--rate=5"], ["--rate=0.5/s"],
                     ["--rate", "120/m"], ["--rate=.5"], ["--bdat=1"], ["--bdat", "65536"],
                     ["--integrity", "--ehlo", "--pipelining", "--size", "--starttls"],
                     ["--tls", "--tls-verify"], ["--report=html"], ["--report=json:/dev/null"],
                     ["--stats=0.5,/dev/null"], ["--stats", "2,/dev/null", "--report=text:/dev/null"]):
            with self.subTest(args=args):
                result = run_tool(OURS, args + ["127.0.0.1:%d" % port])
                self.assertEqual((result.rc, result.stderr),
                                 (1, b"smtp-source: fatal: connect: Connection refused\n"))


if __name__ == "__main__":
    unittest.main()
