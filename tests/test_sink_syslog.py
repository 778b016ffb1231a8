"""-s command-list: what the sink sends to syslog (reference A11).

There is no syslog daemon on the test hosts, so while a test runs it plays
one: it binds a UNIX datagram socket at /dev/log (only when nothing is
there, and as root; it removes exactly that socket in cleanup) and reads
what the sink processes send.  A datagram from the C library's syslog(3)
looks like b"<22>Nov 23 12:00:00 smtp-sink[1234]: HELO x": priority
(facility mail, level info), time stamp, ident (the base name of the
program name) with the PID, then the message.

Every command is logged before it is answered, and the test stops the sink
and then sends a datagram of its own before it reads, so that everything
the sink sent is in by then (datagrams on one socket stay in order).  Where
Postfix's smtp-sink is installed, the same conversations are run against it
and the messages (priority, ident, text; not the PID) must be the same.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import unittest

from tests import support

DEV_LOG = "/dev/log"
INFO_MAIL = 22                          # LOG_MAIL | LOG_INFO
ALL = "connect,helo,ehlo,lhlo,xclient,xforward,auth,mail,rcpt,data,.,rset,noop,vrfy,quit"
DATAGRAM = re.compile(rb"<(\d+)>([A-Z][a-z]{2} [ 1-3][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}) "
                      rb"([^\[\]]*)\[(\d+)\]: (.*)\Z", re.S)

REFERENCE = [b"HELO  helo.example  \r\n", b"EHLO e\xff\tx\r\n", b"MAIL FROM:<a@b> SIZE=5\r\n",
             b"RCPT TO:<c@d>\r\n", b"DATA\r\n", b"body\r\nNOOP in data\r\n.\r\n",
             b"NOOP x\r\n", b"VRFY " + b"v" * 150 + b"\r\n", b"FOO bar\r\n", b"\r\n",
             b"   \r\n", b"STARTTLS\r\n", b"\x00NOOP\r\n", b"helo x\r\n", b"HeLo y\r\n",
             b"QUIT bye\r\n"]
REFERENCE_LOG = [b"connect ", b"HELO  helo.example  ", b"EHLO e??x",
                 b"MAIL FROM:<a@b> SIZE=5", b"RCPT TO:<c@d>", b"DATA ", b". ", b"NOOP x",
                 b"VRFY " + b"v" * 100, b"helo x", b"HeLo y", b"QUIT bye"]
EVERY_VERB = [b"HELO h\r\n", b"EHLO e\r\n", b"LHLO l\r\n", b"XCLIENT NAME=x\r\n",
              b"XFORWARD ADDR=1.2.3.4\r\n", b"AUTH PLAIN x\r\n", b"RCPT TO:<early>\r\n",
              b"DATA\r\n", b"MAIL FROM:<a>\r\n", b"MAIL FROM:<nested>\r\n",
              b"RCPT TO:<b>\r\n", b"VRFY v\r\n", b"DATA\r\n", b"x\r\n.\r\n", b".\r\n",
              b". foo\r\n", b".foo\r\n", b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n"]
LMTP = [b"LHLO l\r\n", b"HELO h\r\n", b"EHLO e\r\n", b"MAIL FROM:<a>\r\n",
        b"RCPT TO:<b>\r\n", b"RCPT TO:<c>\r\n", b"DATA\r\n", b"x\r\n.\r\n", b".\r\n",
        b"QUIT\r\n"]
ODD_LINES = [b"NOOP \x00x\r\n", b"NOOP x\r\r\n", b"NOOP a\x7fb\r\n", b"NOOP \xc3\xa9\r\n",
             b"NOOP\r\n", b"NOOP   \r\n", b"NOOP\t\r\n", b"  NOOP  y\r\n", b"\tnoop\tz\r\n",
             b"NOOP\rX\r\n", b"NOOP\n", b"NOOP\r\n", b"HELO " + b"h" * 300 + b"\r\n",
             b"VRFY " + b"x" * 99 + b"\r\n", b"VRFY " + b"y" * 100 + b"\r\n",
             b"VRFY " + b"z" * 101 + b"\r\n", b"QUIT\r\n"]

CASES = [
    # (name, options, conversations)
    ("reference", ["-s", ALL], [REFERENCE]),
    ("every verb", ["-s", ALL], [EVERY_VERB]),
    ("some commands", ["-s", "helo,quit"], [EVERY_VERB]),
    ("list forms", ["-s", "HELO", "-s", " mail\trcpt ,, ", "-s", ""], [EVERY_VERB]),
    ("odd lines", ["-s", "noop,vrfy,helo,quit"], [ODD_LINES]),
    ("lmtp", ["-L", "-s", ALL], [LMTP]),
    ("-e", ["-e", "-s", "ehlo,helo"], [[b"EHLO x\r\n", b"HELO y\r\n"]]),
    ("-C -F", ["-C", "-F", "-s", "xclient,xforward,auth"],
     [[b"XCLIENT a\r\n", b"XFORWARD b\r\n", b"AUTH c\r\n"]]),
    ("before -f -r", ["-s", ALL, "-f", "noop,rcpt", "-r", "mail,."],
     [[b"NOOP x\r\n", b"RCPT TO:<b>\r\n", b"MAIL FROM:<a>\r\n", b"QUIT\r\n"]]),
    ("before -f .", ["-s", ".", "-f", "."],
     [[b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n", b"DATA\r\n", b"x\r\n.\r\n", b"QUIT\r\n"]]),
    ("before -Q", ["-s", "noop", "-Q", "noop"], [[b"NOOP once\r\n", b"NOOP twice\r\n"]]),
    ("before -q quit", ["-s", "quit,noop", "-q", "quit"], [[b"QUIT now\r\n", b"NOOP\r\n"]]),
    ("before -q connect", ["-s", "connect", "-q", "connect"], [[], []]),
    ("before -Q connect", ["-s", "connect", "-Q", "connect"], [[]]),
    ("before -f quit", ["-s", "quit", "-f", "quit"], [[b"QUIT a\r\n", b"QUIT b\r\n"]]),
    ("before a delay", ["-s", "rcpt", "-W", "rcpt:1"], [[b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n"]]),
    ("-v adds nothing", ["-v", "-s", "noop"], [EVERY_VERB]),
    ("no -s", ["-v", "-c"], [REFERENCE, EVERY_VERB]),
    ("two sessions", ["-s", "connect,quit"], [[b"QUIT\r\n"], [b"NOOP\r\n"], [b"QUIT x\r\n"]]),
]


def need_root():
    if not support.IS_ROOT:
        sys.stderr.write("\n*** SKIPPED: syslog tests bind /dev/log and need root; "
                         "they do NOT run here (CI runs as root) ***\n")
        raise unittest.SkipTest("needs root")


class SyslogCatcher:
    """A stand-in syslog daemon at /dev/log for the length of one test."""

    def __init__(self, test):
        need_root()
        if os.path.lexists(DEV_LOG):
            sys.stderr.write("\n*** SKIPPED: %s exists (a syslog daemon?); the -s tests "
                             "do NOT run here ***\n" % DEV_LOG)
            raise unittest.SkipTest("%s exists" % DEV_LOG)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(DEV_LOG)         # fails if someone made it meanwhile
        except OSError as err:
            self.sock.close()
            raise unittest.SkipTest("cannot bind %s: %s" % (DEV_LOG, err))
        info = os.lstat(DEV_LOG)
        self.identity = (info.st_dev, info.st_ino)
        test.addCleanup(self.close)
        os.chmod(DEV_LOG, 0o666)            # the sink runs as nobody
        self.datagrams = []
        self.cond = threading.Condition()
        self.stopping = False
        self.sock.settimeout(0.2)           # so that the reader sees `stopping`
        self.thread = threading.Thread(target=self._read, name="syslog")
        self.thread.start()

    def _read(self):
        while not self.stopping:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            with self.cond:
                self.datagrams.append(data)
                self.cond.notify_all()

    def close(self):
        self.stopping = True
        self.thread.join(support.TIMEOUT)
        self.sock.close()
        try:
            info = os.lstat(DEV_LOG)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self.identity:     # still ours
            os.unlink(DEV_LOG)

    def sync(self):
        """Wait until every datagram sent so far has been read."""
        marker = b"<0>sync %d %d" % (os.getpid(), id(self))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(marker, DEV_LOG)
        with self.cond:
            if not self.cond.wait_for(lambda: marker in self.datagrams, support.TIMEOUT):
                raise AssertionError("syslog marker did not arrive")
            self.datagrams.remove(marker)

    def take(self, pid):
        """Parsed datagrams of process pid, removed from the list:
        [(priority, ident, text)]."""
        found, rest = [], []
        with self.cond:
            for data in self.datagrams:
                match = DATAGRAM.match(data)
                if match and int(match.group(4)) == pid:
                    found.append((int(match.group(1)), match.group(3), match.group(5)))
                else:
                    rest.append(data)
            self.datagrams[:] = rest
        return found


class SyslogBase(support.BothEngines, unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.catcher = SyslogCatcher(self)

    def logged(self, command, options, conversations, executable=None):
        """Run a sink with options through the conversations; returns what
        it logged, [(priority, ident, text)], and its stderr.  executable:
        the file to run when command[0] is only the name to give it."""
        path = os.path.join(support.temp_dir(self), "s.sock")
        server = support.Server(command + support.PRIVS + options + ["unix:" + path, "10"],
                                path, socket.AF_UNIX)
        if executable:
            self.start_as(server, executable)
        else:
            server.start(self)
        pid = server.proc.pid
        for steps in conversations:
            support.converse(path, socket.AF_UNIX, steps)
        rc, out, err = server.stop()
        self.assertNotIn(b"Traceback", err)
        self.catcher.sync()
        return self.catcher.take(pid), err

    def start_as(self, server, executable):
        """Server.start, with an argv[0] that is not the executable's path."""
        server.proc = subprocess.Popen(server.cmd, executable=executable,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
        self.addCleanup(server.stop)
        support.wait_until(lambda: server.proc.poll() is not None or server._listening(),
                           what="server %r" % server.cmd)
        if server.proc.poll() is not None:
            raise AssertionError("server exited: %r" % (server.proc.communicate(),))

    def ours(self, options, conversations):
        return self.logged(support.python_cmd(support.SINK), options, conversations)[0]

    def theirs(self, options, conversations):
        return self.logged([support.POSTFIX_SINK], options, conversations)[0]


class SyslogTest(SyslogBase):
    """Ours, against the reference notes."""

    def test_reference_messages(self):
        found = self.ours(["-s", ALL], [REFERENCE])
        self.assertEqual(found, [(INFO_MAIL, b"smtp-sink", text) for text in REFERENCE_LOG])

    def test_datagram_format(self):
        pid_seen = []
        base = support.temp_dir(self)
        path = os.path.join(base, "s.sock")
        server = support.Server(support.python_cmd(support.SINK) + support.PRIVS +
                                ["-s", "helo", "unix:" + path, "10"], path, socket.AF_UNIX)
        server.start(self)
        pid_seen.append(server.proc.pid)
        support.converse(path, socket.AF_UNIX, [b"HELO there\r\n"])
        server.stop()
        self.catcher.sync()
        with self.catcher.cond:
            mine = [d for d in self.catcher.datagrams if b"[%d]: " % pid_seen[0] in d]
        self.assertEqual(len(mine), 1, mine)
        self.assertRegex(mine[0], rb"\A<22>[A-Z][a-z]{2} [ 1-3][0-9] [0-9]{2}:[0-9]{2}:"
                                  rb"[0-9]{2} smtp-sink\[%d\]: HELO there\Z" % pid_seen[0])

    def test_nothing_without_s(self):
        self.assertEqual(self.ours(["-v", "-c"], [REFERENCE, EVERY_VERB]), [])

    def test_verbose_adds_nothing(self):
        self.assertEqual(self.ours(["-v", "-s", "noop"], [[b"NOOP\r\n", b"HELO x\r\n"]]),
                         [(INFO_MAIL, b"smtp-sink", b"NOOP ")])

    def test_logged_before_the_action(self):
        self.assertEqual(self.ours(["-s", "connect", "-q", "connect"], [[]]),
                         [(INFO_MAIL, b"smtp-sink", b"connect ")])
        self.assertEqual(self.ours(["-s", "noop", "-f", "noop"], [[b"NOOP x\r\n"]]),
                         [(INFO_MAIL, b"smtp-sink", b"NOOP x")])
        self.assertEqual(self.ours(["-s", "quit", "-Q", "quit"], [[b"QUIT\r\n"]]),
                         [(INFO_MAIL, b"smtp-sink", b"QUIT ")])

    def test_ident_is_the_program_base_name(self):
        link = os.path.join(support.temp_dir(self), "my-sink")
        os.symlink(support.SINK, link)
        found, _ = self.logged(support.python_cmd(link), ["-s", "noop"], [[b"NOOP\r\n"]])
        self.assertEqual(found, [(INFO_MAIL, b"my-sink", b"NOOP ")])

    def test_logging_survives_chroot(self):
        # syslog is opened (and connected) before the chroot: a jail without
        # /dev/log does not silence -s.  (Postfix loses it; reported.)
        jail = os.path.join(support.temp_dir(self), "jail")
        os.mkdir(jail)
        found = self.ours(["-R", jail, "-s", "connect,helo"], [[b"HELO x\r\n"]])
        self.assertEqual(found, [(INFO_MAIL, b"smtp-sink", b"connect "),
                                 (INFO_MAIL, b"smtp-sink", b"HELO x")])


class SyslogDifferentialTest(SyslogBase):
    """Ours and Postfix's, the same conversations: the same messages."""

    def setUp(self):
        support.need_postfix()
        super().setUp()

    def compare(self, options, conversations):
        theirs = self.theirs(options, conversations)
        ours = self.ours(options, conversations)
        self.assertEqual(ours, theirs)
        return ours

    def test_ident_from_argv0(self):
        # Postfix started as ".../my-sink", ours through a symlink of that name.
        link = os.path.join(support.temp_dir(self), "my-sink")
        os.symlink(support.SINK, link)
        theirs, _ = self.logged([link], ["-s", "noop"], [[b"NOOP\r\n"]],
                                executable=support.POSTFIX_SINK)
        ours, _ = self.logged(support.python_cmd(link), ["-s", "noop"], [[b"NOOP\r\n"]])
        self.assertEqual(ours, theirs)
        self.assertEqual(ours, [(INFO_MAIL, b"my-sink", b"NOOP ")])


def _make_test(options, conversations):
    def test(self):
        self.compare(options, conversations)
    return test


for _name, _options, _conversations in CASES:
    setattr(SyslogDifferentialTest, "test_" + re.sub(r"\W+", "_", _name).strip("_"),
            _make_test(_options, _conversations))


if __name__ == "__main__":
    unittest.main()
