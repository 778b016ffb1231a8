"""Differential tests: the same conversations against Postfix's smtp-sink
and ours, compared byte for byte (replies, -c output, stderr, dump files).

Only what must differ is normalised: the random capture id, the Received:
time stamp, and the program name in front of diagnostics.  Postfix must be
installed (CI installs it); without it these tests skip, loudly.
"""

import os
import re
import socket
import unittest

from tests import support
from tests.support import Wait

# Conversations used by several cases.
FULL = [b"EHLO client.example\r\n", b"HELO client.example\r\n",
        b"MAIL FROM:<a@b> SIZE=10\r\n", b"RCPT TO:<c@d>\r\n",
        b"RCPT TO:<e@f> NOTIFY=NEVER\r\n", b"DATA\r\n",
        b"Subject: one\r\n\r\nbody1\r\n..dotline\r\n.\r\n",
        b"RSET\r\n", b"NOOP\r\n", b"VRFY foo\r\n", b"FOO bar\r\n", b"\r\n",
        b"XCLIENT NAME=x\r\n", b"XFORWARD ADDR=1.2.3.4\r\n", b"AUTH PLAIN AAAA\r\n",
        b"QUIT\r\n"]
UNTIL_DATA = [b"HELO h\r\n", b"MAIL FROM:<s@x>\r\n", b"RCPT TO:<r1@x>\r\n",
              b"RCPT TO:<r2@x>\r\n", b"DATA\r\n"]
WAITED = UNTIL_DATA + [Wait(b"354"), b"Subject: t\r\n\r\nhello\r\n.\r\n", b"QUIT\r\n"]
TRANSACTION = [b"HELO h\r\n", b"MAIL FROM:<s@x>\r\n", b"RCPT TO:<r1@x>\r\n",
               b"RCPT TO:<r2@x>\r\n", b"DATA\r\n", b"Subject: t\r\n\r\nhello\r\n.\r\n",
               b"QUIT\r\n"]
EVERY_VERB = [b"CONNECT\r\n", b"HELO x\r\n", b"EHLO x\r\n", b"LHLO x\r\n",
              b"XCLIENT a\r\n", b"XFORWARD a\r\n", b"AUTH x\r\n", b"MAIL FROM:<a>\r\n",
              b"RCPT TO:<b>\r\n", b"VRFY x\r\n", b"DATA\r\n", b"x\r\n.\r\n", b".\r\n",
              b"RSET\r\n", b"NOOP\r\n", b"STARTTLS\r\n", b"QUIT\r\n", b"NOOP\r\n"]
PARSING = [b"noop\r\n", b"HeLo mixed\r\n", b"  NOOP\r\n", b"\tNOOP\r\n", b"noop   \r\n",
           b"NOOP\t\r\n", b"NOOP\n", b"NOOP x\r\r\n", b"NOOP\r\r\n", b"NOOP\rX\r\n",
           b"NO\x00OP\r\n", b"NOOP \x00x\r\n", b"\x00\r\n", b"   \r\n", b"\t\r\n",
           b"NOOP\r", b"\n", b". foo\r\n", b".foo\r\n", b"..\r\n", b".\r\n",
           b"\xff\xfe\r\n", b"QUIT extra\r\n", b"NOOP after quit\r\n"]
STATES = [b"RCPT TO:<a>\r\n", b"DATA\r\n", b"MAIL FROM:<a>\r\n", b"MAIL FROM:<b>\r\n",
          b"DATA\r\n", b"RCPT\r\n", b"RCPT TO:<c>\r\n", b"DATA extra args\r\n",
          b"line\r\n.\r\n", b"RCPT TO:<d>\r\n", b"DATA\r\n", b"MAIL\r\n", b"RCPT\r\n",
          b"HELO x\r\n", b"RCPT TO:<e>\r\n", b"MAIL FROM:<f>\r\n", b"RCPT TO:<g>\r\n",
          b"EHLO y\r\n", b"DATA\r\n", b"QUIT\r\n"]
PIPELINED = [b"EHLO p\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nRCPT TO:<c>\r\nDATA\r\n"
             b"Subject: p\r\n\r\nline\r\n.\r\nMAIL FROM:<d>\r\nRCPT TO:<e>\r\nDATA\r\n"
             b".\r\nNOOP\r\nQUIT\r\n"]
DATA_EDGES = [b"HELO d\r\n", b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n", b"DATA\r\n",
              b".x\r\n..y\r\n...z\r\n. \r\n", b"a\rb\r\nc\r\r\nbare\nlf\nline\r\n",
              b"\n.\nnot end\r\n", b".\r\r\nnot end either\r\n", b"nul\x00 and \xe9\xff\r\n",
              b"From me\r\n", b"x" * 5000 + b"\r\n",
              b"split", b"\r", b"\n", b".", b"\r", b"\n",
              b"MAIL FROM:<empty>\r\n", b"RCPT TO:<b>\r\n", b"DATA\r\n", b".\r\n",
              b"MAIL FROM:<crlfcrlf>\r\n", b"RCPT TO:<b>\r\n", b"DATA\r\n",
              b"x\r\n\r\n.\r\n", b"QUIT\r\n"]
ARGS = [b"HELO   spaced   \r\n", b"MAIL FROMX:<a>\r\n", b"RCPT X <c:d>\r\n",
        b"RCPT TO:<b\tc>\r\n", b"RCPT TO:<\xc3\xa9>  \r\n", b"RCPT TO::<colons>\r\n",
        b"RCPT <nocolon>\r\n", b"RCPT TO:\r\n", b"DATA\r\n", b"x\r\n.\r\n",
        b"EHLO \xc3\xa9t\xc3\xa9\t\r\n", b"MAIL FROM :<a:b>\r\n", b"RCPT TO:<" + b"r" * 300 + b">\r\n",
        b"DATA\r\n", b".\r\n", b"EHLO\r\n", b"MAIL FROM:<x>\r\n", b"RCPT TO:<y>\r\n",
        b"DATA\r\n", b".\r\n", b"QUIT\r\n"]
NO_HELO = [b"MAIL FROM:<noh@x>\r\n", b"RCPT TO:<z@z>\r\n", b"DATA\r\n", b".\r\n",
           b"EHLO e\r\n", b"HELO h\r\n", b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n",
           b"DATA\r\n", b"x\r\n.\r\n", b"QUIT\r\n"]
ABORTED = [b"HELO a\r\n", b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n", b"RSET\r\n",
           b"MAIL FROM:<c>\r\n", b"RCPT TO:<d>\r\n", b"HELO again\r\n",
           b"MAIL FROM:<e>\r\n", b"RCPT TO:<f>\r\n", b"DATA\r\n", b"cut off here\r\n"]
LMTP = [b"LHLO l\r\n", b"HELO h\r\n", b"EHLO e\r\n", b"MAIL FROM:<a>\r\n",
        b"RCPT TO:<b>\r\n", b"RCPT TO:<c>\r\n", b"RCPT TO:<d>\r\n", b"DATA\r\n",
        b"Subject: l\r\n\r\nx\r\n.\r\n", b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n",
        b"RCPT TO:<c>\r\n", b".\r\n", b"DATA\r\n", b"y\r\n.\r\n", b".\r\n",
        b"MAIL FROM:<a>\r\n", b"DATA\r\n", b"RCPT TO:<x>\r\n", b".\r\n",
        b"RCPT TO:<y>\r\n", b"DATA\r\n", b".\r\n", b"QUIT\r\n"]
LONG_LINES = [
    [b"NOOP " + b"x" * 2041 + b"\r\n", b"QUIT\r\n"],            # 2048 with CRLF: fine
    [b"NOOP\r\nNOOP " + b"x" * 2042 + b"\r\n", b"QUIT\r\n"],     # 2049: too long
    [b"NOOP " + b"x" * 2042 + b"\r"],                            # 2048 bytes, no LF yet
    [b"NOOP " + b"y" * 5000],
    [b"HELO h\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n",
     b"z" * 100000 + b"\r\n.\r\n", b"QUIT\r\n"],                 # DATA lines: no limit
]

CASES = [
    # (name, options, conversations); "{dir}" is the sink's own dump directory.
    ("default", [], [FULL]),
    ("every verb", [], [EVERY_VERB]),
    ("parsing", [], [PARSING]),
    ("states", [], [STATES]),
    ("pipelined", [], [PIPELINED]),
    ("counters", ["-c"], [TRANSACTION, [b"NOOP\r\n"], [b"QUIT\r\n"], PIPELINED]),
    ("counters in data", ["-c"], [ABORTED, STATES]),
    ("lmtp", ["-L", "-c"], [LMTP]),
    ("lmtp dump", ["-L", "-d", "{dir}/l."], [LMTP]),
    ("each ehlo flag", ["-8"], [[b"EHLO x\r\n"]]),
    ("-a", ["-a"], [[b"EHLO x\r\n", b"AUTH PLAIN x\r\n"]]),
    ("-C", ["-C"], [[b"EHLO x\r\n", b"XCLIENT NAME=x\r\n"]]),
    ("-F", ["-F"], [[b"EHLO x\r\n", b"XFORWARD NAME=x\r\n"]]),
    ("-E", ["-E"], [[b"EHLO x\r\n", b"MAIL FROM:<a>\r\n"]]),
    ("-N", ["-N"], [[b"EHLO x\r\n"]]),
    ("-p", ["-p"], [PIPELINED]),
    ("all keywords off", ["-8", "-a", "-C", "-F", "-E", "-N", "-p"], [[b"EHLO x\r\n"]]),
    ("-e", ["-e"], [[b"EHLO x\r\n", b"HELO x\r\n", b"XCLIENT x\r\n", b"AUTH x\r\n"]]),
    ("-P", ["-P", "-h", "mx.example"], [[b"EHLO x\r\n", b"HELO x\r\n"]]),
    ("-L -e", ["-L", "-e"], [[b"LHLO x\r\n", b"EHLO x\r\n"]]),
    ("-L -P", ["-L", "-P"], [[b"LHLO x\r\n"]]),
    ("-h", ["-h", "mx.example.com"], [FULL]),
    ("-h with blank", ["-h", "two words"], [[b"EHLO x\r\n", b"HELO y\r\n"]]),
    ("-f each", ["-f", "helo,ehlo mail RCPT,data . rset noop vrfy xclient xforward auth"],
     [EVERY_VERB]),
    ("-r each", ["-r", "HELO, EHLO, MAIL, RCPT, DATA, ., RSET, NOOP, VRFY, QUIT"],
     [EVERY_VERB]),
    ("-f connect", ["-f", "connect"], [[b"NOOP\r\n", b"QUIT\r\n"]]),
    ("-r connect -b", ["-r", "connect", "-b", "451 4.7.1 Try later"], [[b"NOOP\r\n"]]),
    ("-Q connect", ["-Q", "connect"], [[Wait(b"421")]]),
    ("-q connect", ["-q", "connect", "-c"], [[]]),
    ("-f quit", ["-f", "quit"], [[b"QUIT\r\n", b"NOOP\r\n"]]),
    ("-Q quit", ["-Q", "quit", "-c"], [[b"QUIT\r\n", b"NOOP\r\n"]]),
    ("-q quit", ["-q", "quit", "-c"], [[b"QUIT\r\n", b"NOOP\r\n"]]),
    ("-f . dump", ["-f", ".", "-c", "-d", "{dir}/f."], [TRANSACTION]),
    ("-r . lmtp", ["-L", "-r", ".", "-B", "554 5.7.1 no"], [LMTP]),
    ("-f . lmtp -B", ["-L", "-f", ".", "-B", "554 5.7.1 no"], [LMTP]),
    ("-Q . dump", ["-Q", ".", "-c", "-D", "{dir}/all"], [TRANSACTION, TRANSACTION]),
    ("-q . dump", ["-q", ".", "-c", "-d", "{dir}/q."], [TRANSACTION]),
    ("-q data", ["-q", "data", "-c", "-d", "{dir}/q."], [TRANSACTION]),
    ("-f data then mail", ["-f", "data"], [[b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n",
                                            b"DATA\r\n", b"MAIL FROM:<c>\r\n"]]),
    ("-f mail then rcpt", ["-f", "mail"], [[b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n"]]),
    ("-f rcpt before mail", ["-f", "rcpt"], [[b"RCPT TO:<b>\r\n"]]),
    ("-r data no mail", ["-r", "data"], [[b"DATA\r\n"]]),
    ("-e -f ehlo", ["-e", "-f", "ehlo"], [[b"EHLO x\r\n"]]),
    ("-C -f xclient", ["-C", "-f", "xclient"], [[b"XCLIENT x\r\n"]]),
    ("-f lhlo smtp", ["-f", "lhlo"], [[b"LHLO x\r\n", b"EHLO x\r\n"]]),
    ("-L -f ehlo", ["-L", "-f", "ehlo"], [[b"EHLO x\r\n", b"LHLO x\r\n"]]),
    ("priority -f -r", ["-f", "noop", "-r", "noop"], [[b"NOOP\r\n"]]),
    ("priority -r -Q", ["-r", "noop", "-Q", "noop"], [[b"NOOP\r\n"]]),
    ("priority -f -q", ["-f", "noop", "-q", "noop"], [[b"NOOP\r\n"]]),
    ("priority -q -Q", ["-Q", "noop", "-q", "noop"], [[b"NOOP\r\n"]]),
    ("list forms", ["-f", ",,helo,,", "-f", "\tNoOp\n", "-r", ""], [[b"HELO x\r\n", b"NOOP\r\n"]]),
    ("-B", ["-f", "rcpt", "-B", "550 5.1.1 no such user"], [[b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n"]]),
    ("-B literal", ["-f", "noop", "-B", "500\\r\\nfoo"], [[b"NOOP\r\n"]]),
    ("-b multi", ["-r", "noop", "-b", "450-multi"], [[b"NOOP\r\n"]]),
    ("-d", ["-d", "{dir}/d/%Q/f."], [FULL, NO_HELO, DATA_EDGES, ARGS]),
    ("-D", ["-D", "{dir}/sub/all"], [FULL, NO_HELO, ABORTED, DATA_EDGES, ARGS]),
    ("-d dir template", ["-d", "{dir}/"], [TRANSACTION]),
    ("-d aborted", ["-d", "{dir}/a."], [ABORTED]),
    ("-S escapes", ["-S", "\\101\\102C\\n\\a\\b\\f\\r\\t\\v\\\\|\\q\\e|\\1014|\\7\\77\\777|",
                    "-d", "{dir}/s."], [TRANSACTION]),
    ("-S nul", ["-S", "From x\\n\\0after", "-D", "{dir}/s"], [TRANSACTION]),
    ("-S no newline", ["-S", "no newline", "-d", "{dir}/s."], [TRANSACTION]),
    ("-S empty", ["-S", "", "-d", "{dir}/s."], [TRANSACTION]),
    ("-S trailing backslash", ["-S", "tail\\", "-d", "{dir}/s."], [TRANSACTION]),
    ("long lines", [], LONG_LINES),
    ("long lines -c -d", ["-c", "-d", "{dir}/l."], LONG_LINES),
    ("-v", ["-v", "-c"], [FULL, [b"EHLO e\xff\tx\r\n", b"NOOP \x00x\r\n", b"\r\n"]]),
    ("-A 0", ["-A", "0", "-c", "-d", "{dir}/a."], [UNTIL_DATA + [Wait(b"354")] + TRANSACTION[5:]]),
    ("-A 0 lmtp", ["-A", "0", "-L"], [[b"LHLO x\r\n", b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n",
                                       b"RCPT TO:<c>\r\n", b"DATA\r\n", Wait(b"354"), b".\r\n"]]),
    ("-M 2", ["-M", "2", "-c"], [TRANSACTION, WAITED]),
    ("-M 1 -f .", ["-M", "1", "-f", "."], [WAITED]),
    ("-M 1 dump", ["-M", "1", "-d", "{dir}/m."], [WAITED]),
    ("-n 2 -c", ["-n", "2", "-c"], [[b"NOOP\r\n"], [b"QUIT\r\n"], [b"QUIT\r\n"]]),
    ("-n without -c", ["-n", "1"], [[b"QUIT\r\n"], [b"QUIT\r\n"]]),
    ("-m", ["-m", "1", "-c"], [TRANSACTION, TRANSACTION]),
    ("-T -t", ["-T", "4096", "-t", "50"], [TRANSACTION]),
]

# Cases whose server stops by itself (no SIGTERM needed).
SELF_STOPPING = {"-M 2", "-M 1 -f .", "-M 1 dump", "-n 2 -c"}

_ID = re.compile(rb" id [0-9a-f]{8};\n\t[^\n]*\n")
_SUFFIX = re.compile(r"[0-9a-f]{8}$")


def normalise_dump(data):
    return _ID.sub(b" id XXXXXXXX;\n\tDATE\n", data)


def normalise_stderr(data):
    data = re.sub(rb"(?m)^(/usr/sbin/smtp-sink|smtp-sink|smtp_sink\.py): ", b"PROG: ", data)
    data = re.sub(rb"(trying\.\.\. \[[^]]*\]):\d+", rb"\1:PORT", data)
    return re.sub(rb"fd=\d+:", b"fd=N:", data)


def read_dumps(directory):
    """{normalised relative name: [normalised contents, ...]}"""
    found = {}
    for top, dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(top, name)
            if name.endswith(".sock"):
                continue
            rel = os.path.relpath(path, directory)
            with open(path, "rb") as f:
                content = normalise_dump(f.read())
            found.setdefault(_SUFFIX.sub("<id>", rel), []).append(content)
    return {k: sorted(v) for k, v in found.items()}


class DifferentialBase(support.BothEngines, unittest.TestCase):
    """Runs a case against both sinks; everything seen must match."""

    maxDiff = None

    def setUp(self):
        support.need_postfix()

    def run_sink(self, program, options, conversations, stops_itself, family):
        base = support.temp_dir(self)
        dump_dir = os.path.join(base, "dumps")
        os.mkdir(dump_dir)
        os.chmod(dump_dir, 0o777)
        options = [o.replace("{dir}", dump_dir) for o in options]
        if family == socket.AF_UNIX:
            address = os.path.join(base, "s.sock")
            endpoint = "unix:" + address
        else:
            port = support.free_port(family)
            host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
            address = (host, port)
            endpoint = "[%s]:%d" % (host, port)
        server = support.Server(program + support.PRIVS + options + [endpoint, "10"],
                                address, family)
        server.start(self)
        replies = []
        for steps in conversations:
            try:
                data, how = support.converse(address, family, steps)
            except (ConnectionRefusedError, FileNotFoundError):
                data, how = b"", "refused"      # it has stopped (-M, -n)
            # Whether a close shows as FIN or RST depends on whether client
            # bytes were still unread at that moment: a race, not a behaviour.
            replies.append((data, "closed" if how in ("eof", "reset") else how))
        if not stops_itself:
            # Postfix finishes a session (removing an aborted capture file)
            # after closing it; a next session is only taken after that.
            support.converse(address, family, [b"QUIT\r\n"])
            rc, out, err = server.stop()
        else:
            rc, out, err = server.wait()
        return {"replies": replies, "exit": rc, "stdout": out,
                "stderr": normalise_stderr(err), "dumps": read_dumps(dump_dir)}

    def compare(self, name, options, conversations, family=socket.AF_UNIX):
        stops = name in SELF_STOPPING
        theirs = self.run_sink([support.POSTFIX_SINK], options, conversations, stops, family)
        ours = self.run_sink(support.python_cmd(support.SINK), options, conversations,
                             stops, family)
        for key in ("replies", "stdout", "stderr", "dumps", "exit"):
            self.assertEqual(theirs[key], ours[key], "%s: %s differ" % (name, key))


class SinkDifferentialTest(DifferentialBase):
    """One test per entry of CASES."""


def _make_test(name, options, conversations):
    def test(self):
        self.compare(name, options, conversations)
    return test


for _name, _options, _conversations in CASES:
    setattr(SinkDifferentialTest,
            "test_" + re.sub(r"\W+", "_", _name).strip("_"),
            _make_test(_name, _options, _conversations))


class SinkDifferentialNetworkTest(DifferentialBase):
    """Client addresses in dumps over IPv4 and IPv6."""

    def test_ipv4_dump(self):
        self.compare("ipv4", ["-d", "{dir}/v4."], [FULL, NO_HELO], socket.AF_INET)

    def test_ipv6_dump(self):
        self.compare("ipv6", ["-D", "{dir}/v6", "-v"], [FULL, NO_HELO], socket.AF_INET6)

    def test_ipv6_lmtp(self):
        self.compare("ipv6 lmtp", ["-L", "-d", "{dir}/v6."], [LMTP], socket.AF_INET6)


if __name__ == "__main__":
    unittest.main()
