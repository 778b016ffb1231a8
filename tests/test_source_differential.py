"""smtp_source.py against Postfix's smtp-source: the same command line, the
same scripted server, the same bytes.

Each case runs both tools at once, each against its own fake server with
the same replies, and compares the conversations byte for byte (only the
Date: value and the process id in Message-Id are normalised, plus the
descriptor/count fields where parallel sessions make them vary), stdout,
stderr and the exit status.  Postfix's tool runs as "smtp-source" so that
diagnostics carry the same prefix.
"""

import os
import re
import socket
import unittest
from concurrent import futures

from tests import support
from tests.fake_smtp import (Close, FakeServer, OURS, POSTFIX, conversation,
                             conversations, normalise_stderr, run_cases, run_tool,
                             seq, temp_file)

M = ["-M", "client.example"]
REJECT = {
    "greeting": b"554 5.7.1 go away\r\n",
    "helo": b"501 5.5.2 bad helo\r\n",
    "mail": b"451 4.3.0 try later\r\n",
    "rcpt": b"550 5.1.1 unknown user\r\n",
    "data": b"554 5.5.1 no data\r\n",
    "dot": b"552 5.3.4 too big\r\n",
}


class DifferentialCase(support.BothEngines, unittest.TestCase):

    def setUp(self):
        support.need_postfix()

    def compare(self, results, keep_fd=True, ordered=True, min_connections=1):
        """Assert that every case behaved the same under both tools."""
        for name, (postfix, ours) in sorted(results.items()):
            with self.subTest(case=name):
                self.assertGreaterEqual(len(postfix.connections), min_connections,
                                        "Postfix's run did not connect: %r" % postfix)
                self.assertEqual(conversations(ours, keep_fd, ordered),
                                 conversations(postfix, keep_fd, ordered))
                self.assertEqual(ours.stdout, postfix.stdout)
                self.assertEqual(normalise_stderr(ours.stderr),
                                 normalise_stderr(postfix.stderr))
                self.assertEqual(ours.rc, postfix.rc)

    def cases(self, table, **common):
        """{name: args} -> run_cases() input, each with TARGET at the end."""
        return {name: dict(common, args=list(args) + ["TARGET"])
                for name, args in table.items()}


class ConversationTests(DifferentialCase):
    """Successful runs: commands, message bytes, counters."""

    def test_smtp_flag_combinations(self):
        table = {
            "default": M,
            "-d -m 3": M + ["-d", "-m", "3"],
            "-m 3": M + ["-m", "3"],
            "-r 3": M + ["-r", "3"],
            "-r 12": M + ["-r", "12"],
            "-N": M + ["-N"],
            "-N -r 3": M + ["-N", "-r", "3"],
            "-N -r 2 -m 2 -d": M + ["-N", "-r", "2", "-m", "2", "-d"],
            "-N -m 3": M + ["-N", "-m", "3"],
            "-o": M + ["-o"],
            "-o -d -m 2 -r 2": M + ["-o", "-d", "-m", "2", "-r", "2"],
            "-S": M + ["-S", "Subject line"],
            "-S empty": M + ["-S", ""],
            "-o -S": M + ["-o", "-S", "ignored"],
            "-c -m 3": M + ["-c", "-m", "3"],
            "-c -d -m 3": M + ["-c", "-d", "-m", "3"],
            "-c -r 2 -o": M + ["-c", "-r", "2", "-o"],
            "-C 3": M + ["-C", "3"],
            "-T 4096": M + ["-T", "4096"],
            "-4": M + ["-4"],
            "atoi 2x": M + ["-m", "2x", "-r", " 2"],
            "options repeated": M + ["-f", "a@x", "-f", "b@x", "-S", "one", "-S", "two"],
        }
        self.compare(run_cases(self, self.cases(table)))

    def test_addresses_and_names(self):
        table = {
            "-f": M + ["-f", "sender@example.com"],
            "-f empty": M + ["-f", ""],
            "-f brackets": M + ["-f", "<x>"],
            "-t -r 3": M + ["-t", "rcpt@example.org", "-r", "3"],
            "-t empty": M + ["-t", ""],
            "-t -N -r 2": M + ["-t", "rcpt@example.org", "-N", "-r", "2"],
            "-M then -f": ["-M", "myhost.example", "-f", "s@x"],
            "-M literal": ["-M", "[10.1.2.3]"],
            "-M IPv6 literal": ["-M", "[IPv6:::1]"],
            "-M underscore": ["-M", "a_b.example"],
            "-M -L": ["-M", "myhost.example", "-L"],
            "8-bit and control bytes": M + ["-f", b"\xc3\xa9@x\ty", "-t", b"a\x01b", "-v"],
            "spaces": M + ["-f", "a b@x", "-S", " lead and trail "],
            "percent signs": M + ["-f", "a%sb@x", "-t", "%d@y", "-S", "100%", "-r", "2"],
            "CR LF in subject": M + ["-S", "a\r\nX-Injected: yes"],
        }
        self.compare(run_cases(self, self.cases(table)))

    def test_default_hostname(self):
        results = run_cases(self, self.cases({"no -M": [], "no -M -d -m 2 -r 2":
                                              ["-d", "-m", "2", "-r", "2"]}))
        self.compare(results)
        postfix, _ = results["no -M"]
        helo = postfix.connections[0].commands()[0]
        self.assertEqual(helo, b"HELO " + os.uname().nodename.encode() + b"\r\n")

    def test_length_payloads(self):
        table = {"-l %d" % n: M + ["-l", str(n)]
                 for n in (1, 2, 77, 78, 79, 80, 81, 100, 159, 160, 161, 250, 1000, 100000)}
        table["-l 81 -o"] = M + ["-l", "81", "-o"]
        table["-l 5x -S"] = M + ["-l", "5x", "-S", "s"]
        table["-l 200 -d -m 2"] = M + ["-l", "200", "-d", "-m", "2"]
        self.compare(run_cases(self, self.cases(table)))

    def test_message_files(self):
        shapes = {
            "two lines, no final newline": b"a\nb",
            "two lines": b"a\nb\n",
            "one char": b"a",
            "newline only": b"\n",
            "dot only": b".",
            "empty": b"",
            "dots and CRs": b".x\n..y\n.\r\nz\r\n\n",
            "NUL": b"x\0y\n",
            "headers": b"Subject: hi\nFrom: <a@b>\n\nbody\n",
            "long line": b"L" * 5000 + b"\n",
            "CRLF only": b"\r\n",
            "trailing CR": b"no newline\r",
            "blank lines": b"\n\n\n",
            "8-bit": b"caf\xc3\xa9\n\xff\n",
        }
        table = {}
        for name, content in shapes.items():
            path = temp_file(self, content)
            table["-F " + name] = M + ["-F", path]
        path = temp_file(self, b"a\n.b\n")
        table["-F -S"] = M + ["-F", path, "-S", "ignored"]
        table["-F -o"] = M + ["-F", path, "-o"]
        table["-F -d -m 2"] = M + ["-F", path, "-d", "-m", "2"]
        table["-F -F"] = M + ["-F", "/nonexistent/file", "-F", path]
        self.compare(run_cases(self, self.cases(table)))

    def test_lmtp(self):
        table = {
            "-L": M + ["-L"],
            "-L -r 3": M + ["-L", "-r", "3"],
            "-L -r 2 -d -m 2": M + ["-L", "-r", "2", "-d", "-m", "2"],
            "-L -o": M + ["-L", "-o"],
            "-L -N -r 2 -c": M + ["-L", "-N", "-r", "2", "-c"],
        }
        self.compare(run_cases(self, self.cases(table, lmtp=True)))

    def test_multiline_and_odd_replies(self):
        table = {
            "multi-line everywhere": (M + ["-r", "2"], {
                "greeting": b"220-fake\r\n220-more\r\n220 ESMTP\r\n",
                "helo": b"250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                "dot": b"250-queued\r\n250 as 1234\r\n"}),
            "bare LF": (M, {"greeting": b"220 fake\n", "helo": b"250 ok\n",
                            "mail": b"250 ok\n", "rcpt": b"250 ok\n",
                            "data": b"354 go\n", "dot": b"250 ok\n"}),
            "codes only": (M, {"greeting": b"220\r\n", "helo": b"250\r\n",
                               "data": b"354\r\n", "dot": b"250\r\n"}),
            "other 3xx to DATA": (M, {"data": b"399 whatever\r\n"}),
            "QUIT rejected": (M, {"quit": b"500 no quit for you\r\n"}),
            "2xx variants": (M, {"helo": b"220 odd but 2xx\r\n", "rcpt": b"251 forward\r\n"}),
            "long reply line": (M, {"helo": b"250 " + b"A" * 20000 + b"\r\n"}),
        }
        cases = {name: {"args": args + ["TARGET"], "replies": replies}
                 for name, (args, replies) in table.items()}
        # The three LMTP replies to "." in one write.
        cases["replies in one packet"] = {
            "args": M + ["-L", "-r", "3", "TARGET"],
            "replies": {"dot": b"250 2.1.5 a\r\n250 2.1.5 b\r\n450 4.2.2 c\r\n"}}
        self.compare(run_cases(self, cases))

    def test_parallel_sessions(self):
        table = {
            "-s 2 -m 4": M + ["-s", "2", "-m", "4"],
            "-s 3 -m 12 -c": M + ["-s", "3", "-m", "12", "-c"],
            "-s 2 -m 4 -N -r 2": M + ["-s", "2", "-m", "4", "-N", "-r", "2"],
        }
        # Which session gets which message (and so the Message-Id fields
        # and -N numbers) depends on timing in both tools: compare the
        # sets of messages without those.
        results = run_cases(self, self.cases(table))
        for name, (postfix, ours) in results.items():
            with self.subTest(case=name):
                self.assertEqual(len(ours.connections), len(postfix.connections))
                self.assertEqual((ours.rc, ours.stdout, ours.stderr),
                                 (postfix.rc, postfix.stdout, postfix.stderr))
                if "-N" in name:
                    self.assertEqual(sorted(rcpt_numbers(ours)), sorted(rcpt_numbers(postfix)))
                    continue
                self.assertEqual(conversations(ours, False, False),
                                 conversations(postfix, False, False))

    def test_more_sessions_than_messages(self):
        # Every session claims a message before any connects, so the count
        # in the Message-Id is below zero from the start: the first message
        # out shows fffffffd in both tools.  The other one shows fffffffd
        # too, or fffffffc once the first one's session has ended (QUIT)
        # and tried for another message.  Which connection, descriptor 3
        # or 5, is answered first is up to the fake server's threads, in
        # both tools alike (each order came up under load): so the order
        # is the order in which the messages arrived.
        results = run_cases(self, self.cases({"-s 5 -m 2": M + ["-s", "5", "-m", "2"]}))
        postfix, ours = results["-s 5 -m 2"]
        self.assertEqual(len(postfix.connections), 2)
        self.assertEqual(conversations(ours, False, False),
                         conversations(postfix, False, False))
        for result in (postfix, ours):
            arrived = sorted((conn.times[i], conn.index, data) for conn in result.connections
                             for i, (kind, data) in enumerate(conn.events) if kind == "D")
            ids = [re.search(rb"Message-Id: <[0-9a-f]+\.([0-9a-f]+)\.([0-9a-f]+)@", data).groups()
                   for _, _, data in arrived]
            self.assertEqual(sorted(fd for fd, _ in ids), [b"0003", b"0005"])
            self.assertEqual(ids[0][1], b"fffffffd")
            self.assertIn(ids[1][1], (b"fffffffd", b"fffffffc"))
            if ids[1][1] == b"fffffffc":
                first = result.connections[arrived[0][1]]
                quit_at = first.times[first.events.index(("C", b"QUIT\r\n"))]
                self.assertLess(quit_at, arrived[1][0])

    def test_parallel_sessions_on_one_connection_each(self):
        # -d with -s 2: how the 6 messages split between the two
        # connections depends on timing; all of them must be there.
        results = run_cases(self, self.cases({"-s 2 -m 6 -d": M + ["-s", "2", "-m", "6", "-d"]}))
        postfix, ours = results["-s 2 -m 6 -d"]
        for result in (postfix, ours):
            self.assertEqual(len(result.connections), 2)
        self.assertEqual(sorted(all_events(ours)), sorted(all_events(postfix)))

    def test_endpoints(self):
        cases = {
            "[::1]": {"args": M + ["TARGET"], "family": "inet6"},
            "-6 [::1]": {"args": M + ["-6", "TARGET"], "family": "inet6"},
            "unix": {"args": M + ["TARGET"], "family": "unix"},
            "unix -v": {"args": M + ["-v", "TARGET"], "family": "unix"},
            "unix -T": {"args": M + ["-T", "8192", "TARGET"], "family": "unix"},
        }
        self.compare(run_cases(self, cases))

    def test_inet_prefix(self):
        results = {}
        for name, prefix in (("inet:", "inet:"), ("no prefix", "")):
            pair = []
            for tool in (POSTFIX, OURS):
                server = FakeServer().start(self)
                pair.append(run_tool(tool, M + [prefix + server.target], server))
            results[name] = tuple(pair)
        self.compare(results)

    def test_verbose(self):
        table = {
            "-v": M + ["-v"],
            "-v -d -m 2 -r 2 -c": M + ["-v", "-d", "-m", "2", "-r", "2", "-c"],
            "-v -o -S x": M + ["-v", "-o"],
            "-v -4": M + ["-v", "-4"],
            "-vv": M + ["-v", "-v"],
        }
        self.compare(run_cases(self, self.cases(table)))
        table = {"-v -L -r 2": M + ["-v", "-L", "-r", "2"]}
        self.compare(run_cases(self, self.cases(table, lmtp=True)))
        table = {"-v multi-line": M + ["-v"]}
        self.compare(run_cases(self, self.cases(
            table, replies={"helo": b"250-a\r\n250-b\tc\r\n250 \xc3\xa9\r\n"})))


class RejectTests(DifferentialCase):
    """Replies other than the expected ones, with and without -A."""

    def test_fatal_rejects(self):
        cases = {}
        for stage, reply in REJECT.items():
            cases["reject " + stage] = {"args": M + ["-c", "TARGET"], "replies": {stage: reply}}
        cases["421 greeting"] = {"args": M + ["TARGET"],
                                 "replies": {"greeting": b"421 4.3.2 busy\r\n"}}
        cases["250 to DATA"] = {"args": M + ["TARGET"], "replies": {"data": b"250 ok\r\n"}}
        cases["second rcpt"] = {"args": M + ["-r", "3", "TARGET"],
                                "replies": {"rcpt": seq(b"250 ok\r\n", b"550 no\r\n")}}
        cases["second message"] = {"args": M + ["-d", "-m", "3", "-c", "TARGET"],
                                   "replies": {"dot": seq(b"250 ok\r\n", b"552 full\r\n")}}
        cases["LMTP second recipient"] = {
            "args": M + ["-L", "-r", "3", "TARGET"], "lmtp": True,
            "replies": {"dot": seq(b"250 ok\r\n", b"452 4.2.2 full\r\n", b"250 ok3\r\n")}}
        cases["multi-line"] = {"args": M + ["TARGET"], "replies": {
            "rcpt": b"550-5.7.1 first line\r\n550-5.7.1 second\r\n550 5.7.1 last\r\n"}}
        cases["code-less"] = {"args": M + ["TARGET"],
                              "replies": {"greeting": b"hello there\r\n"}}
        cases["four digits"] = {"args": M + ["TARGET"], "replies": {"greeting": b"2200 x\r\n"}}
        cases["non-printable"] = {"args": M + ["TARGET"],
                                  "replies": {"helo": b"501\ttab \xc3\xa9\x01 nul\0after\r\n"}}
        cases["text limit"] = {"args": M + ["TARGET"], "replies": {"helo": b"".join(
            b"501-" + bytes([65 + i]) * 1000 + b"\r\n" for i in range(12)) + b"501 end\r\n"}}
        cases["-v fatal"] = {"args": M + ["-v", "TARGET"], "replies": {"mail": b"550 no\r\n"}}
        self.compare(run_cases(self, cases))

    def test_allowed_rejects(self):
        cases = {}
        for stage, reply in REJECT.items():
            cases["-A " + stage] = {"args": M + ["-A", "-c", "TARGET"], "replies": {stage: reply}}
            cases["-A -d -m 2 " + stage] = {"args": M + ["-A", "-d", "-m", "2", "TARGET"],
                                            "replies": {stage: reply}}
        cases["-A some rcpts"] = {"args": M + ["-A", "-r", "3", "TARGET"],
                                  "replies": {"rcpt": seq(b"550 no\r\n", b"250 ok\r\n")}}
        cases["-A all rcpts -c"] = {"args": M + ["-A", "-r", "2", "-c", "-m", "2", "TARGET"],
                                    "replies": {"rcpt": b"550 no\r\n"}}
        cases["-A rset rejected"] = {"args": M + ["-A", "-m", "2", "-d", "TARGET"],
                                     "replies": {"mail": b"550 no\r\n",
                                                 "rset": b"500 no rset\r\n"}}
        cases["-A LMTP"] = {"args": M + ["-A", "-L", "-r", "3", "-c", "TARGET"], "lmtp": True,
                            "replies": {"dot": seq(b"250 ok\r\n", b"452 full\r\n", b"250 ok\r\n")}}
        cases["-A -v"] = {"args": M + ["-A", "-v", "TARGET"], "replies": {"rcpt": b"550 no\r\n"}}
        cases["-A -o"] = {"args": M + ["-A", "-o", "TARGET"], "replies": {"greeting": b"554 no\r\n"}}
        self.compare(run_cases(self, cases))

    def test_lost_connection(self):
        cases = {}
        for stage in ("greeting", "helo", "mail", "rcpt", "data", "dot", "quit"):
            cases["EOF at " + stage] = {"args": M + ["-c", "TARGET"], "replies": {stage: None}}
            cases["-v EOF at " + stage] = {"args": M + ["-v", "TARGET"],
                                          "replies": {stage: None}}
        cases["partial greeting"] = {"args": M + ["TARGET"],
                                     "replies": {"greeting": Close(b"220 partial")}}
        cases["partial multi-line"] = {"args": M + ["-v", "TARGET"],
                                       "replies": {"helo": Close(b"250-partial\r\n")}}
        cases["-L EOF at LHLO"] = {"args": M + ["-L", "TARGET"], "lmtp": True,
                                   "replies": {"helo": None}}
        cases["-o EOF at MAIL"] = {"args": M + ["-o", "TARGET"], "replies": {"mail": None}}
        cases["-d second MAIL"] = {"args": M + ["-d", "-m", "2", "TARGET"],
                                   "replies": {"mail": seq(b"250 ok\r\n", None)}}
        cases["-A EOF at RSET"] = {"args": M + ["-A", "TARGET"],
                                   "replies": {"mail": b"550 no\r\n", "rset": None}}
        cases["-A EOF at QUIT after RSET"] = {"args": M + ["-A", "TARGET"],
                                              "replies": {"data": b"550 no\r\n", "quit": None}}
        cases["-A EOF after greeting reject"] = {
            "args": M + ["-A", "TARGET"],
            "replies": {"greeting": b"554 no\r\n", "helo": None}}
        cases["-L EOF between replies"] = {"args": M + ["-L", "-r", "2", "TARGET"],
                                           "lmtp": True,
                                           "replies": {"dot": seq(b"250 ok\r\n", None)}}
        self.compare(run_cases(self, cases))


class ErrorTests(DifferentialCase):
    """Errors before any conversation: arguments, names, connecting."""

    def run_pairs(self, table, cwd=None):
        """{name: args} -> {name: (postfix, ours)}, no server."""
        with futures.ThreadPoolExecutor(16) as pool:
            jobs = {name: (pool.submit(run_tool, POSTFIX, args, cwd=cwd),
                           pool.submit(run_tool, OURS, args, cwd=cwd))
                    for name, args in table.items()}
            return {name: (p.result(), o.result()) for name, (p, o) in jobs.items()}

    def compare_output(self, results):
        for name, (postfix, ours) in sorted(results.items()):
            with self.subTest(case=name):
                self.assertEqual(postfix.rc, 1)
                self.assertEqual((ours.rc, ours.stdout, normalise_stderr(ours.stderr)),
                                 (postfix.rc, postfix.stdout,
                                  normalise_stderr(postfix.stderr)))

    def test_bad_arguments(self):
        directory = support.temp_dir(self)
        message = os.path.join(directory, "m")
        with open(message, "wb") as handle:
            handle.write(b"x\n")
        table = {
            "no args": [],
            "two targets": ["a", "b"],
            "option after target": ["a", "-v"],
            "-Z": ["-Z", "x"],
            "-v -Z": ["-v", "-Z", "x"],
            "missing argument": ["-m"],
            # Our long options are ours (see test_source_cli); any other
            # "--word" is still getopt(3)'s invalid option '-'.
            "unknown long option": ["--reportx", "x"],
            "unknown long option with a value": ["--rate2=5", "x"],
            "bad value before bad option": ["-s", "0", "-Z", "x"],
            "bad name before long option": ["-M", "a..b", "--help"],
            "-w -R before bad option": ["-w", "1", "-R", "1", "-Z", "x"],
            "bad option before bad value": ["-Z", "-s", "0", "x"],
            "-s 0": ["-s", "0", "x"], "-s abc": ["-s", "abc", "x"],
            "-m 0": ["-m", "0", "x"], "-m abc": ["-m", "abc", "x"], "-m -1": ["-m", "-1", "x"],
            "-r 0": ["-r", "0", "x"], "-r abc": ["-r", "abc", "x"],
            "-l 0": ["-l", "0", "x"], "-l abc": ["-l", "abc", "x"], "-l -1": ["-l", "-1", "x"],
            "-C 0": ["-C", "0", "x"], "-C abc": ["-C", "abc", "x"],
            "-R 0": ["-R", "0", "x"], "-R abc": ["-R", "abc", "x"],
            "-w 0": ["-w", "0", "x"], "-w abc": ["-w", "abc", "x"], "-w 0x1": ["-w", "0x1", "x"],
            "-w -R": ["-w", "1", "-R", "1", "x"], "-R -w": ["-R", "1", "-w", "1", "x"],
            "-w 1 -R 0": ["-w", "1", "-R", "0", "x"],
            "-T 0": ["-T", "0", "x"], "-T abc": ["-T", "abc", "x"],
            "-l -F": ["-l", "5", "-F", message, "x"], "-F -l": ["-F", message, "-l", "5", "x"],
            "-F -l 0": ["-F", message, "-l", "0", "x"], "-l 0 -F": ["-l", "0", "-F", message, "x"],
            "-F missing": ["-F", os.path.join(directory, "missing"), "x"],
            "-F missing -v": ["-v", "-F", os.path.join(directory, "missing"), "x"],
            "-F directory": ["-F", directory, "unix:/nonexistent"],
            "-F missing, extra arg": ["-F", os.path.join(directory, "missing"), "x", "y"],
            "-M space": ["-M", "bad host name", "x"],
            "-M hyphen": ["-M", "-x", "x"], "-M dot": ["-M", "x.", "x"],
            "-M numeric": ["-M", "1.2.3.4", "x"], "-M empty": ["-M", "", "x"],
            "-M a..b": ["-M", "a..b", "x"], "-M long label": ["-M", "a" * 300, "x"],
            "-M tab": ["-M", "a\tb", "x"], "-M 8-bit": ["-M", b"\xc3\xa9", "x"],
            "-M [1.2.3]": ["-M", "[1.2.3]", "x"], "-M [1.2.3.4": ["-M", "[1.2.3.4", "x"],
            "-M [::1]": ["-M", "[::1]", "x"], "-M []": ["-M", "[]", "x"],
            "-M [1.2.3.4]x": ["-M", "[1.2.3.4]x", "x"], "-M [ipv6:]": ["-M", "[ipv6:]", "x"],
            "-M [ipv6:1.2.3.4]": ["-M", "[ipv6:1.2.3.4]", "x"],
            "-M too much": ["-M", "[" + "1" * 46 + "]", "x"],
            "-M before -s 0": ["-M", "a..b", "-s", "0", "x"],
            "-s 0 before -M": ["-s", "0", "-M", "a..b", "x"],
            "-M no target": ["-M", "a..b"],
            "-M last wins": ["-v", "-M", "[1.2.3.4]", "-M", "1.2.3.4", "x"],
            "bad service": ["127.0.0.1:abc"], "inet: bad service": ["-v", "inet:127.0.0.1:abc"],
            "negative port": ["127.0.0.1:-1"],
            "unknown host": ["nosuchhost.invalid:25"],
            "empty target": ["-v", ""], "inet: only": ["inet:"],
            "missing ]": ["[::1"], "garbage after ]": ["[::1]x"], "no host": [":25"],
            "bad host": ["a b:25"],
            "-6 IPv4": ["-v", "-6", "127.0.0.1:25"], "-4 IPv6": ["-4", "[::1]:25"],
            "-4 -6": ["-v", "-4", "-6", "127.0.0.1:25"],
            "long unix path": ["unix:/" + "x" * 120],
            "unix missing": ["-v", "unix:" + os.path.join(directory, "missing.sock")],
            "unix empty": ["unix:"],
            "unix not a socket": ["unix:" + message],
        }
        self.compare_output(self.run_pairs(table))

    def test_connection_refused(self):
        port = support.free_port()
        target = "127.0.0.1:%d" % port
        table = {
            "refused": [target],
            "refused -A -s 3 -m 5": ["-A", "-s", "3", "-m", "5", target],
            "refused -v": ["-v", target],
            "refused -C 3 -v": ["-C", "3", "-v", target],
            "refused -C 2 -s 2": ["-C", "2", "-s", "2", target],
            "refused -c": ["-c", target],
            "refused wrapped port": ["127.0.0.1:%d" % (port + 65536)],
        }
        # The default port is 25; try it only where nothing listens there.
        if not support.listening(("127.0.0.1", 25), socket.AF_INET):
            table["refused default port"] = ["-v", "127.0.0.1:"]
        self.compare_output(self.run_pairs(table))


def all_events(result):
    """Every event of every connection of a run, Message-Ids normalised."""
    return [event for conn in result.connections
            for event in conversation(conn, keep_fd=False)[0]]


def rcpt_numbers(result):
    return [line for conn in result.connections for line in conn.commands()
            if line.startswith(b"RCPT")]


if __name__ == "__main__":
    unittest.main()
