"""-u user and -R root-dir: what the sink process becomes (reference A1, A8).

Run as root (CI does); without root these tests skip, loudly.  Each server
is a subprocess whose credentials and root directory are read from
/proc/PID; the privileges are dropped after the socket is opened, so every
check waits for a greeting first (sessions are served only after the drop).
Where Postfix's smtp-sink is installed, it is put through the same steps
and must come out the same.
"""

import os
import pwd
import re
import shutil
import socket
import stat
import sys
import tempfile
import unittest

from tests import support

NOBODY = pwd.getpwnam("nobody")
TRANSACTION = [b"EHLO client.example\r\n", b"MAIL FROM:<a@b> SIZE=10\r\n",
               b"RCPT TO:<c@d>\r\n", b"DATA\r\n",
               b"Subject: jail\r\n\r\nbody\r\n..dot\r\n.\r\n", b"QUIT\r\n"]
REPLIES = (b"220 smtp-sink ESMTP\r\n250-smtp-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
           b"250-AUTH PLAIN LOGIN\r\n250-XCLIENT NAME HELO\r\n"
           b"250-XFORWARD NAME ADDR PROTO HELO\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n"
           b"250 \r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           b"250 2.0.0 Ok\r\n221 Bye\r\n")
RECORD = re.compile(
    rb"X-Client-Addr: (127\.0\.0\.1|local)\nX-Client-Proto: ESMTP\n"
    rb"X-Helo-Args: client\.example\nX-Mail-Args: <a@b> SIZE=10\nX-Rcpt-Args: <c@d>\n"
    rb"Received: from client\.example \(\[(127\.0\.0\.1|local)\]\)\n"
    rb"\tby smtp-sink \(smtp-sink\) with ESMTP id ([0-9a-f]{8});\n"
    rb"\t[A-Z][a-z]{2}, [ 1-3][0-9] [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} [-+][0-9]{4} \([^)]*\)\n"
    rb"Subject: jail\n\nbody\n\.dot\n\n\Z")
STATUS_FIELDS = ("Uid", "Gid", "Groups")


def need_root():
    if not support.IS_ROOT:
        sys.stderr.write("\n*** SKIPPED: privilege tests need root; they do NOT run "
                         "here (CI runs as root) ***\n")
        raise unittest.SkipTest("needs root")


def ours(*args):
    return support.python_cmd(support.SINK, *args)


def postfix(*args):
    return [support.POSTFIX_SINK] + list(args)


def have_postfix():
    return os.access(support.POSTFIX_SINK, os.X_OK)


def current_umask():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def credentials(pid):
    """{"Uid": [real, effective, saved, fs], "Gid": [...], "Groups": [...]}"""
    found = {}
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in STATUS_FIELDS:
                found[name] = sorted(int(v) for v in value.split()) if name == "Groups" \
                    else [int(v) for v in value.split()]
    return found


def normalise_record(data):
    return re.sub(rb" id [0-9a-f]{8};\n\t[^\n]*\n", b" id ID;\n\tDATE\n", data)


class Sink:
    """A sink subprocess on a TCP port or UNIX socket; stopped in cleanup."""

    def __init__(self, test, command, unix_path=None):
        if unix_path:
            self.address, self.family = unix_path, socket.AF_UNIX
            endpoint = "unix:" + unix_path
        else:
            self.address = ("127.0.0.1", support.free_port())
            self.family = socket.AF_INET
            endpoint = "127.0.0.1:%d" % self.address[1]
        self.server = support.Server(command + [endpoint, "5"], self.address, self.family)
        self.server.start(test)
        self.pid = self.server.proc.pid

    def converse(self, steps):
        return support.converse(self.address, self.family, steps)

    def ready(self):
        """Wait for a served session: by then privileges are dropped."""
        data, _ = self.converse([b"QUIT\r\n"])
        assert data.endswith(b"221 Bye\r\n"), data
        return self

    def stop(self):
        return self.server.stop()


class RunAsUserTest(support.BothEngines, unittest.TestCase):
    """-u nobody: all user and group ids, and the supplementary groups."""

    def setUp(self):
        need_root()

    def expected(self):
        uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
        return {"Uid": [uid] * 4, "Gid": [gid] * 4,
                "Groups": sorted(set(os.getgrouplist("nobody", gid)))}

    def test_ours_becomes_nobody(self):
        sink = Sink(self, ours("-u", "nobody")).ready()
        self.assertEqual(credentials(sink.pid), self.expected())
        self.assertEqual(sink.stop()[2], b"")

    def test_postfix_agrees(self):
        if not have_postfix():
            support.need_postfix()
        theirs = Sink(self, postfix("-u", "nobody")).ready()
        self.assertEqual(credentials(theirs.pid), self.expected())

    def test_root_without_u_is_fatal(self):
        port = support.free_port()
        result = support.run(ours("127.0.0.1:%d" % port, "5"))
        self.assertEqual((result.returncode, result.stdout, result.stderr),
                         (1, b"", b"smtp-sink: fatal: -u option is required if running as root\n"))
        if have_postfix():
            theirs = support.run(postfix("127.0.0.1:%d" % port, "5"))
            self.assertEqual(theirs.stderr.replace(support.POSTFIX_SINK.encode(), b"smtp-sink"),
                             result.stderr)
            self.assertEqual(theirs.returncode, result.returncode)

    def test_vv_names_chroot_and_user(self):
        self.check_vv([], "(none)")

    def test_vv_names_the_jail(self):
        jail = os.path.join(support.temp_dir(self), "jail")
        os.mkdir(jail)
        self.check_vv(["-R", jail], jail)

    def check_vv(self, extra, shown):
        programs = [("ours", ours)] + ([("postfix", postfix)] if have_postfix() else [])
        heads = {}
        for name, make in programs:
            sink = Sink(self, make("-vv", "-u", "nobody", *extra)).ready()
            err = sink.stop()[2]
            self.assertNotIn(b"Traceback", err)
            port = b"%d" % sink.address[1]
            prog = b"smtp-sink: " if name == "ours" else support.POSTFIX_SINK.encode() + b": "
            lines = [line[len(prog):] for line in err.split(b"\n")[:3]]
            heads[name] = [line.replace(port, b"PORT") for line in lines]
        self.assertEqual(heads["ours"], [b"name_mask: all", b"trying... [127.0.0.1]:PORT",
                                         b"chroot %s user nobody" % shown.encode()])
        if "postfix" in heads:
            self.assertEqual(heads["postfix"], heads["ours"])


class JailTest(support.BothEngines, unittest.TestCase):
    """-R jail -u nobody: the process is jailed, the socket opened before the
    chroot still works, and dumps land inside the jail, made by nobody.
    The jail is an empty directory: no /etc, /usr or Python library in it,
    so everything the sink needs must be loaded before the chroot."""

    maxDiff = None

    def setUp(self):
        need_root()
        self.base = support.temp_dir(self)

    def make_jail(self, name, dumps_dir):
        """A jail; with dumps_dir, a /dumps writable by nobody is made in a
        root-owned jail, without it the jail root is writable by nobody."""
        jail = os.path.join(self.base, name)
        os.mkdir(jail)
        if dumps_dir:
            os.chmod(jail, 0o755)
            os.mkdir(os.path.join(jail, "dumps"))
            os.chmod(os.path.join(jail, "dumps"), 0o777)
        else:
            os.chmod(jail, 0o777)
        return jail

    def run_jailed(self, make, jail, options, unix=False):
        """One transaction with a jailed sink; returns (replies, stdout, stderr)."""
        path = os.path.join(self.base, os.path.basename(jail) + ".sock") if unix else None
        sink = Sink(self, make("-u", "nobody", "-R", jail, *options), unix_path=path)
        replies, _ = sink.converse(TRANSACTION)
        self.assertEqual(os.readlink("/proc/%d/root" % sink.pid), jail)
        self.assertEqual(credentials(sink.pid)["Uid"], [NOBODY.pw_uid] * 4)
        # A second session: still served after the first one's files were made.
        again, _ = sink.converse([b"NOOP\r\n", b"QUIT\r\n"])
        self.assertEqual(again, b"220 smtp-sink ESMTP\r\n250 2.0.0 Ok\r\n221 Bye\r\n")
        rc, out, err = sink.stop()
        self.assertNotIn(b"Traceback", err)
        return replies, out, err

    def check_file(self, path, mode=0o644):
        info = os.lstat(path)
        self.assertTrue(stat.S_ISREG(info.st_mode))
        self.assertEqual((info.st_uid, info.st_gid), (NOBODY.pw_uid, NOBODY.pw_gid))
        self.assertEqual(stat.S_IMODE(info.st_mode), mode & ~current_umask())

    def single_dump(self, make, name, dumps_dir=True, unix=False, options=(), prefix=b""):
        jail = self.make_jail(name, dumps_dir)
        replies, out, err = self.run_jailed(make, jail, ["-d", "/dumps/f."] + list(options),
                                            unix)
        self.assertEqual(replies, REPLIES)
        names = os.listdir(os.path.join(jail, "dumps"))
        self.assertEqual(len(names), 1, names)
        self.assertRegex(names[0], r"^f\.[0-9a-f]{8}$")
        path = os.path.join(jail, "dumps", names[0])
        self.check_file(path)
        with open(path, "rb") as f:
            record = f.read()
        self.assertTrue(record.startswith(prefix), record)
        match = RECORD.match(record[len(prefix):])
        self.assertIsNotNone(match, record)
        self.assertEqual(match.group(3).decode(), names[0][2:])     # id = file suffix
        if not dumps_dir:                   # made by the sink, as nobody
            info = os.stat(os.path.join(jail, "dumps"))
            self.assertEqual(info.st_uid, NOBODY.pw_uid)
            self.assertEqual(stat.S_IMODE(info.st_mode), 0o755 & ~current_umask())
        return normalise_record(record), out, err

    def shared_dump(self, make, name, unix=False):
        jail = self.make_jail(name, True)
        replies, out, err = self.run_jailed(make, jail, ["-D", "/dumps/all"], unix)
        self.assertEqual(replies, REPLIES)
        self.assertEqual(os.listdir(os.path.join(jail, "dumps")), ["all"])
        path = os.path.join(jail, "dumps", "all")
        self.check_file(path)
        with open(path, "rb") as f:
            record = f.read()
        self.assertIsNotNone(RECORD.match(record), record)
        return normalise_record(record), out, err

    def test_d_in_jail_over_tcp(self):
        record, out, err = self.single_dump(ours, "d-tcp")
        self.assertEqual(err, b"")
        if have_postfix():
            self.assertEqual(self.single_dump(postfix, "pf-d-tcp")[0], record)

    def test_d_in_jail_over_unix_socket(self):
        record, out, err = self.single_dump(ours, "d-unix", unix=True)
        self.assertEqual(err, b"")
        if have_postfix():
            self.assertEqual(self.single_dump(postfix, "pf-d-unix", unix=True)[0], record)

    def test_d_dump_directory_made_in_jail(self):
        record, out, err = self.single_dump(ours, "d-mkdir", dumps_dir=False)
        self.assertEqual(err, b"")
        if have_postfix():
            self.assertEqual(self.single_dump(postfix, "pf-d-mkdir", dumps_dir=False)[0],
                             record)

    def test_D_in_jail(self):
        for unix in (False, True):
            with self.subTest(unix=unix):
                record, out, err = self.shared_dump(ours, "D-%s" % unix, unix)
                self.assertEqual(err, b"")
                if have_postfix():
                    self.assertEqual(self.shared_dump(postfix, "pf-D-%s" % unix, unix)[0],
                                     record)

    def test_empty_jail_with_everything_on(self):
        # Verbose output, counters, a start string and a dump: whatever a
        # session does must work with nothing from the file system.
        record, out, err = self.single_dump(
            ours, "busy", dumps_dir=False, options=["-v", "-c", "-S", "From x\\n"],
            prefix=b"From x\n")
        self.assertEqual(out, b"sess=0 quit=0 mesg=1\rsess=1 quit=1 mesg=1\r"
                              b"sess=2 quit=2 mesg=1\r")
        self.assertNotIn(b"warning", err)
        self.assertIn(b"smtp-sink: EHLO client.example\n", err)
        self.assertIn(b"smtp-sink: disconnect\n", err)

    def test_listeners_opened_before_the_chroot_serve(self):
        # Both kinds of listener at once are not possible; one after another.
        jail = self.make_jail("two", True)
        for path in (None, os.path.join(self.base, "two.sock")):
            with self.subTest(unix=bool(path)):
                sink = Sink(self, ours("-u", "nobody", "-R", jail), unix_path=path).ready()
                data, _ = sink.converse([b"HELO x\r\n", b"QUIT\r\n"])
                self.assertEqual(data, b"220 smtp-sink ESMTP\r\n250 smtp-sink\r\n221 Bye\r\n")
                self.assertEqual(sink.stop()[2], b"")


class NotRootTest(support.BothEngines, unittest.TestCase):
    """Started as an ordinary user (setpriv to nobody): -u fails the way
    initgroups(3) fails for Postfix; without -u the sink just runs.  Our
    sink runs from a copy nobody can read (the checkout may be private)."""

    maxDiff = None

    def setUp(self):
        need_root()
        self.port = support.free_port()
        self.sink = os.path.join(support.copy_for_nobody(self), "smtp_sink.py")

    def ours(self, *args):
        return support.python_cmd(self.sink, *args)

    def compare(self, args, stderr):
        args = [a.format(port=self.port) for a in args]
        result = support.run(support.as_nobody(self.ours(*args)))
        self.assertEqual((result.returncode, result.stdout, result.stderr),
                         (1, b"", stderr), args)
        if have_postfix():
            theirs = support.run(support.as_nobody(postfix(*args)))
            prefix = support.POSTFIX_SINK.encode() + b": "
            self.assertEqual(theirs.stderr.replace(prefix, b"smtp-sink: "), stderr, args)
            self.assertEqual(theirs.returncode, 1)

    def test_u_nobody(self):
        self.compare(["-u", "nobody", "127.0.0.1:{port}", "5"],
                     b"smtp-sink: fatal: initgroups: Operation not permitted\n")

    def test_u_nobody_with_jail(self):
        self.compare(["-u", "nobody", "-R", "/nonexistent", "127.0.0.1:{port}", "5"],
                     b"smtp-sink: fatal: initgroups: Operation not permitted\n")

    def test_u_root(self):
        self.compare(["-u", "root", "127.0.0.1:{port}", "5"],
                     b"smtp-sink: fatal: setgid(0): Operation not permitted\n")

    def test_unknown_user(self):
        self.compare(["-u", "nosuchuser", "127.0.0.1:{port}", "5"],
                     b"smtp-sink: fatal: unknown user: nosuchuser\n")

    def test_privileged_port(self):
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            if int(f.read()) <= 25:
                raise unittest.SkipTest("port 25 is not privileged here")
        self.compare(["127.0.0.1:25", "5"],
                     b"smtp-sink: fatal: bind 127.0.0.1 port 25: Permission denied\n")

    def test_no_u_runs_as_the_caller(self):
        # No root check, no privilege change; -R without -u does nothing.
        for extra in ([], ["-R", "/nonexistent"]):
            with self.subTest(extra=extra):
                sink = Sink(self, support.as_nobody(self.ours(*extra))).ready()
                found = credentials(sink.pid)
                self.assertEqual(found["Uid"], [NOBODY.pw_uid] * 4)
                self.assertEqual(found["Groups"], [])
                self.assertEqual(os.readlink("/proc/%d/root" % sink.pid), "/")
                self.assertEqual(sink.stop()[2], b"")


class PrivateCheckoutTest(unittest.TestCase):
    """make test as root in a checkout nobody else can read (every clone
    under /root is one): the tests that run the sink as nobody work from
    a readable copy, and run; none fails or is skipped for it."""

    def test_not_root_tests_in_a_private_checkout(self):
        need_root()
        support.need_program("setpriv")
        private = tempfile.mkdtemp(prefix="smtpprivate-")      # mode 0700
        self.addCleanup(shutil.rmtree, private, True)
        checkout = os.path.join(private, "checkout")
        os.mkdir(checkout)
        support.copy_checkout(checkout, also=("tests",))
        result = support.run([sys.executable, "-m", "unittest", "-v",
                              "tests.test_sink_privileges.NotRootTest"], cwd=checkout,
                             timeout=support.TIMEOUT * 6)
        report = result.stderr.decode(errors="replace")
        self.assertEqual(result.returncode, 0, report[-3000:])
        self.assertNotIn("SKIPPED", report)
        self.assertIn("Ran 6 tests", report)


def capabilities(pid):
    """{"CapInh": int, "CapPrm": ..., "CapEff": ..., "CapAmb": ...}"""
    found = {}
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
                found[name] = int(value, 16)
    return found


class DroppedForGoodTest(support.BothEngines, unittest.TestCase):
    """What RunAsUserTest and JailTest leave out: no capability is left
    (nothing to regain root with), the starter's own supplementary groups
    are gone, the working directory is inside the jail, a large spilled
    capture works in the jail, and a bad jail is fatal before serving."""

    def setUp(self):
        need_root()
        self.base = support.temp_dir(self)

    def jail(self, name):
        jail = os.path.join(self.base, name)
        os.mkdir(jail)
        os.chmod(jail, 0o755)
        os.mkdir(os.path.join(jail, "dumps"))
        os.chmod(os.path.join(jail, "dumps"), 0o777)
        return jail

    def test_no_capabilities_left(self):
        programs = [ours] + ([postfix] if have_postfix() else [])
        for make in programs:
            with self.subTest(program=make.__name__):
                sink = Sink(self, make("-u", "nobody")).ready()
                self.assertEqual(capabilities(sink.pid),
                                 {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0})

    def test_starters_groups_are_dropped(self):
        # Root started with extra supplementary groups (4, 27, 100): after
        # -u nobody only nobody's own groups are left.
        setpriv = support.need_program("setpriv")
        wanted = sorted(set(os.getgrouplist("nobody", NOBODY.pw_gid)))
        programs = [ours] + ([postfix] if have_postfix() else [])
        for make in programs:
            with self.subTest(program=make.__name__):
                sink = Sink(self, [setpriv, "--groups=4,27,100", "--"]
                            + make("-u", "nobody")).ready()
                found = credentials(sink.pid)
                self.assertEqual(found["Groups"], wanted)
                self.assertEqual(found["Gid"], [NOBODY.pw_gid] * 4)
                self.assertEqual(found["Uid"], [NOBODY.pw_uid] * 4)

    def test_working_directory_is_the_jail(self):
        jail = self.jail("cwd")
        sink = Sink(self, ours("-u", "nobody", "-R", jail)).ready()
        self.assertEqual(os.readlink("/proc/%d/root" % sink.pid), jail)
        self.assertEqual(os.readlink("/proc/%d/cwd" % sink.pid), jail)

    def test_big_captures_in_the_jail(self):
        # Records above the spill size: -d streams to its file, -D builds
        # the record in an unlinked temporary file next to the target, all
        # inside the jail, as nobody.
        body = b"".join(b"%07d " % i + b"j" * 90 + b"\r\n" for i in range(40000))   # ~4 MB
        steps = TRANSACTION[:4] + [body + b".\r\n", b"QUIT\r\n"]
        for option, name in (("-d", "/dumps/new/f."), ("-D", "/dumps/new/all")):
            with self.subTest(option=option):
                jail = self.jail("big" + option)
                sink = Sink(self, ours("-u", "nobody", "-R", jail, option, name))
                replies, _ = sink.converse(steps)
                self.assertTrue(replies.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"
                                                 b"250 2.0.0 Ok\r\n221 Bye\r\n"), replies)
                rc, out, err = sink.stop()
                self.assertEqual(err, b"")
                [path] = [os.path.join(d, f) for d, _, fs in os.walk(jail) for f in fs]
                self.assertEqual(os.stat(path).st_uid, NOBODY.pw_uid)
                with open(path, "rb") as f:
                    self.assertTrue(f.read().endswith(body.replace(b"\r\n", b"\n") + b"\n"))

    def test_missing_jail_is_fatal_before_serving(self):
        port = support.free_port()
        args = ["-u", "nobody", "-R", os.path.join(self.base, "nonexistent"),
                "127.0.0.1:%d" % port, "5"]
        result = support.run(ours(*args))
        expected = ("smtp-sink: fatal: chroot(%s): No such file or directory\n"
                    % os.path.join(self.base, "nonexistent")).encode()
        self.assertEqual((result.returncode, result.stdout, result.stderr), (1, b"", expected))
        if have_postfix():
            theirs = support.run(postfix(*args))
            self.assertEqual((theirs.returncode, theirs.stderr.replace(
                support.POSTFIX_SINK.encode(), b"smtp-sink")), (1, expected))


if __name__ == "__main__":
    unittest.main()
