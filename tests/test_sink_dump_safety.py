"""Capture files under attack and under failure (-d, -D).

  * Files are created exclusively (O_EXCL), never through a symlink planted
    in a shared dump directory (O_NOFOLLOW), with mode 0644 under the umask.
  * A capture that cannot be opened or written (permissions, a full disk, a
    read-only file system, a write failing half way) is never acknowledged
    with 250: a warning is printed, the -D file keeps whole records only,
    and the sink serves the next client.
  * SIGTERM while several large records are being appended to a -D file
    leaves only whole records.

(test_sink_capture.py has the basic failure cases: a blocked directory,
/dev/full, a failing write, a symlinked -D file.)
"""

import errno
import os
import random
import re
import signal
import stat
import sys
import threading
import time
import unittest
from unittest import mock

from smtpcore import dump
from tests import load, support
from tests.support import InProcessSink

MESSAGE = [b"HELO client.example\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
           b"DATA\r\n", b"Subject: s\r\n\r\nbody\r\n.\r\n", b"QUIT\r\n"]
OK = b"250 2.0.0 Ok\r\n"
FAILED = b"451 4.3.0 Error: capture file unavailable\r\n"
HELLO = b"220 smtp-sink ESMTP\r\n250 smtp-sink\r\n"
# MESSAGE when its MAIL is refused: no transaction, so RCPT and DATA are
# refused too, the message lines are read as (unknown) commands and its "."
# as the end-of-data command (250, as in Postfix): no message was taken.
REFUSED_AT_MAIL = (HELLO + FAILED + b"503 5.5.1 Error: need MAIL command\r\n"
                   b"503 5.5.1 Error: need RCPT command\r\n"
                   b"500 5.5.1 Error: unknown command\r\n500 5.5.2 Error: unknown command\r\n"
                   b"500 5.5.1 Error: unknown command\r\n250 2.0.0 Ok\r\n221 Bye\r\n")
REFUSED_AT_DOT = (HELLO + b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                  b"354 End data with <CR><LF>.<CR><LF>\r\n" + FAILED + b"221 Bye\r\n")
RECEIVED = re.compile(rb"\nReceived: [^\n]*\n\tby [^\n]*\n\t[^\n]*\n")
START = "=====8<=====\\n"               # -S: marks the start of each record
MARK = b"=====8<=====\n"


def files_under(top):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)


def big_message(size, fill=b"b"):
    """MESSAGE with a body of about size bytes."""
    line = fill * 998 + b"\r\n"
    return MESSAGE[:4] + [line * (size // len(line)) + b".\r\n", b"QUIT\r\n"]


def records(content):
    return content.split(MARK)[1:]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def need_root(what):
    if not support.IS_ROOT:
        sys.stderr.write("\n*** SKIPPED: %s needs root; it does NOT run here "
                         "(CI runs as root) ***\n" % what)
        raise unittest.SkipTest("needs root")


def mount_or_skip(test, args, what):
    """Run mount(8) with args; skip loudly if this machine does not allow it.
    The cleanup unmounts (lazily, so that a busy mount cannot hang it)."""
    need_root(what)
    try:
        result = support.run(["mount"] + args)
    except OSError as err:
        result = None
        reason = str(err)
    else:
        reason = result.stderr.decode(errors="replace").strip()
    if result is None or result.returncode != 0:
        sys.stderr.write("\n*** SKIPPED: %s: mount %s failed (%s); this variant does NOT "
                         "run here ***\n" % (what, " ".join(args), reason))
        raise unittest.SkipTest("mount failed")
    test.addCleanup(support.run, ["umount", "-l", args[-1]])


class PlantedNameTest(support.BothEngines, unittest.TestCase):
    """-d names are a template plus 8 random hex digits.  Whoever can write
    to the dump directory may guess them (Postfix's generator is seeded by
    the clock) and plant a symlink or a file there first: the sink must
    then pick another name, and never write through it."""

    SEED = 4242

    def sink_with_known_ids(self, top):
        """A sink whose first session's capture ids are known (--seed: see
        its documentation; a guess of the clock does as well)."""
        sink = InProcessSink(self, ["--seed=%d" % self.SEED, "-d", top + "/f."])
        rng = random.Random("%d:0" % self.SEED)
        return sink, [os.path.join(top, "f.%08x" % rng.getrandbits(31)) for _ in range(200)]

    def test_symlink_at_the_next_name(self):
        top = support.temp_dir(self)
        target = os.path.join(support.temp_dir(self), "precious")
        with open(target, "wb") as f:
            f.write(b"precious\n")
        sink, names = self.sink_with_known_ids(top)
        os.symlink(target, names[0])
        dangling = os.path.join(top, "..", "nowhere")
        os.symlink(dangling, names[1])
        data, _ = sink.converse(MESSAGE)
        self.assertIn(OK, data)
        self.assertEqual(read(target), b"precious\n")
        self.assertFalse(os.path.lexists(dangling))
        self.assertTrue(os.path.islink(names[0]) and os.path.islink(names[1]))
        self.assertEqual(files_under(top), sorted(names[:3]))
        record = read(names[2])                 # the third id: the first free name
        self.assertIn(b" id %s;" % names[2][-8:].encode(), record)
        self.assertEqual(sink.stderr(), b"")

    def test_existing_file_at_the_next_name(self):
        top = support.temp_dir(self)
        sink, names = self.sink_with_known_ids(top)
        with open(names[0], "wb") as f:
            f.write(b"someone else's\n")
        data, _ = sink.converse(MESSAGE)
        self.assertIn(OK, data)
        self.assertEqual(read(names[0]), b"someone else's\n")      # not truncated, not appended
        self.assertTrue(read(names[1]).endswith(b"\nSubject: s\n\nbody\n\n"))

    def test_every_name_taken(self):
        # The sink gives up after a bounded number of tries: 451 at MAIL,
        # a warning, nothing written through the links, and the next
        # client is served.
        top = support.temp_dir(self)
        target = os.path.join(support.temp_dir(self), "precious")
        with open(target, "wb") as f:
            f.write(b"precious\n")
        sink, names = self.sink_with_known_ids(top)
        for name in names[:100]:
            os.symlink(target, name)
        data, _ = sink.converse(MESSAGE[:3] + [b"QUIT\r\n"])
        self.assertEqual(data, HELLO + FAILED + b"503 5.5.1 Error: need MAIL command\r\n"
                         b"221 Bye\r\n")
        self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: [^\n]*f\.[^\n]*\n$")
        self.assertEqual(read(target), b"precious\n")
        data, _ = sink.converse(MESSAGE)
        self.assertIn(OK, data)
        self.assertEqual(len(files_under(top)), 101)

    def test_D_dangling_symlink_is_not_created(self):
        top = support.temp_dir(self)
        dangling = os.path.join(support.temp_dir(self), "created-through-link")
        os.symlink(dangling, os.path.join(top, "all"))
        sink = InProcessSink(self, ["-D", os.path.join(top, "all")])
        data, _ = sink.converse(MESSAGE)
        self.assertIn(FAILED, data)
        self.assertNotIn(OK, data)
        self.assertFalse(os.path.lexists(dangling))
        self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: open [^\n]*/all: "
                                        rb"Too many levels of symbolic links\n$")

    def test_D_big_record_symlink_is_not_followed(self):
        # A record bigger than the spill size goes through a temporary file
        # first; the final append must still refuse the link.
        top = support.temp_dir(self)
        target = os.path.join(support.temp_dir(self), "precious")
        with open(target, "wb") as f:
            f.write(b"precious\n")
        os.symlink(target, os.path.join(top, "all"))
        sink = InProcessSink(self, ["-D", os.path.join(top, "all")])
        data, _ = sink.converse(big_message(3 << 20))
        self.assertIn(FAILED, data)
        self.assertEqual(read(target), b"precious\n")
        self.assertEqual(os.listdir(top), ["all"])          # no spill file left behind


class ModeTest(support.BothEngines, unittest.TestCase):
    """Modes of what the sink creates, under various umasks (a subprocess
    each: the umask is per process)."""

    def run_with_umask(self, umask, template_args, top):
        wrapper = ["sh", "-c", "umask %03o && exec \"$@\"" % umask, "sh"]
        sink = load.SinkProcess(self, template_args, wrapper=wrapper)
        data, _ = support.converse(sink.address, sink.family, MESSAGE)
        self.assertIn(OK, data)
        sink.stop()
        self.assertEqual(sink.stderr(), b"")

    def modes(self, top):
        found = {}
        for directory, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(directory, name)
                found[os.path.relpath(path, top)] = stat.S_IMODE(os.lstat(path).st_mode)
        return found

    def test_d_modes(self):
        for umask, file_mode, dir_mode in ((0o000, 0o644, 0o755), (0o022, 0o644, 0o755),
                                           (0o077, 0o600, 0o700), (0o027, 0o640, 0o750)):
            with self.subTest(umask=oct(umask)):
                top = support.temp_dir(self)
                self.run_with_umask(umask, ["-d", top + "/sub/deeper/f."], top)
                self.check_d_modes(top, file_mode, dir_mode)

    def check_d_modes(self, top, file_mode, dir_mode):
        """Every directory the sink made (intermediate ones too, as
        Postfix's make_dirs() does) gets dir_mode; the file file_mode."""
        modes = {name: oct(mode) for name, mode in self.modes(top).items()}
        [name] = [n for n in modes if n.startswith("sub/deeper/")]
        self.assertEqual(modes, {"sub": oct(dir_mode), "sub/deeper": oct(dir_mode),
                                 name: oct(file_mode)})

    def test_postfix_agrees_on_d_modes(self):
        support.need_postfix()
        top = support.temp_dir(self)
        wrapper = ["sh", "-c", "umask 000 && exec \"$@\"", "sh"]
        theirs = load.SinkProcess(self, ["-d", top + "/sub/deeper/f."], wrapper=wrapper,
                                  program=[support.POSTFIX_SINK])
        data, _ = support.converse(theirs.address, theirs.family, MESSAGE)
        self.assertIn(OK, data)
        self.check_d_modes(top, 0o644, 0o755)

    def test_D_modes(self):
        for umask, file_mode in ((0o000, 0o644), (0o077, 0o600)):
            with self.subTest(umask=oct(umask)):
                top = support.temp_dir(self)
                self.run_with_umask(umask, ["-D", top + "/all"], top)
                self.assertEqual(self.modes(top), {"all": file_mode})

    def test_D_existing_file_keeps_its_mode(self):
        top = support.temp_dir(self)
        path = os.path.join(top, "all")
        with open(path, "wb") as f:
            f.write(b"earlier\n")
        os.chmod(path, 0o666)           # writable by the -u user
        self.run_with_umask(0o000, ["-D", path], top)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o666)
        self.assertTrue(read(path).startswith(b"earlier\nX-Client-Addr: "))


class UnwritableTest(support.BothEngines, unittest.TestCase):
    """A capture that cannot be stored: never 250, a warning, and the next
    client is served.  The sink is a subprocess (as root: -u nobody, so
    that permissions apply)."""

    def sink(self, args):
        return load.SinkProcess(self, args)

    def converse(self, sink, steps):
        return support.converse(sink.address, sink.family, steps)[0]

    def served_next(self, sink):
        data = self.converse(sink, [b"NOOP\r\n", b"QUIT\r\n"])
        self.assertEqual(data, b"220 smtp-sink ESMTP\r\n250 2.0.0 Ok\r\n221 Bye\r\n")
        self.assertTrue(sink.alive())

    def test_read_only_directory(self):
        top = support.temp_dir(self)
        locked = os.path.join(top, "locked")
        os.mkdir(locked)
        os.chmod(locked, 0o555)
        if support.IS_ROOT is False and os.access(locked, os.W_OK):
            self.skipTest("permissions are not enforced here")
        for args, replies in ((["-d", locked + "/f."], REFUSED_AT_MAIL),
                              (["-d", locked + "/sub/f."], REFUSED_AT_MAIL),
                              (["-D", locked + "/all"], REFUSED_AT_DOT)):
            with self.subTest(args=args):
                sink = self.sink(args)
                self.assertEqual(self.converse(sink, MESSAGE), replies)
                self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: (open|mkdir) "
                                                rb"[^\n]*: Permission denied\n$")
                self.served_next(sink)
        self.assertEqual(os.listdir(locked), [])

    def full_disk(self):
        top = support.temp_dir(self)
        mount_or_skip(self, ["-t", "tmpfs", "-o", "size=256k,mode=0777", "tmpfs", top],
                      "a tiny tmpfs (full disk)")
        return top

    def test_full_disk_d(self):
        top = self.full_disk()
        sink = self.sink(["-d", top + "/f."])
        self.assertIn(OK, self.converse(sink, big_message(100000)))
        for _ in range(3):                      # 300 kB each: never fit
            data = self.converse(sink, big_message(300000))
            self.assertNotIn(OK, data)
            self.assertIn(b"354 End data with <CR><LF>.<CR><LF>\r\n" + FAILED, data)
        self.assertRegex(sink.stderr(), rb"^(smtp-sink: warning: append file [^\n]*/f\.[0-9a-f]{8}: "
                                        rb"No space left on device\n){3}$")
        self.assertEqual(len(files_under(top)), 1)  # the failed files are removed
        self.assertIn(OK, self.converse(sink, big_message(100000)))    # and their space freed
        self.served_next(sink)

    def test_full_disk_D_keeps_whole_records_only(self):
        top = self.full_disk()
        path = os.path.join(top, "all")
        sink = self.sink(["-D", path, "-S", START])
        self.assertIn(OK, self.converse(sink, big_message(150000, b"1")))
        size = os.path.getsize(path)
        data = self.converse(sink, big_message(150000, b"2"))     # does not fit
        self.assertNotIn(OK, data)
        self.assertIn(FAILED, data)
        self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: [^\n]*: "
                                        rb"No space left on device\n$")
        # No part of the refused record may stay in the file.
        self.assertEqual(os.path.getsize(path), size, "a partial record was left in the file")
        self.assertEqual(len(records(read(path))), 1)
        self.assertNotIn(b"222222", read(path))
        self.assertIn(OK, self.converse(sink, MESSAGE))            # a small one still fits
        self.assertEqual(len(records(read(path))), 2)
        self.served_next(sink)

    def test_read_only_file_system(self):
        source = support.temp_dir(self)
        top = support.temp_dir(self)
        mount_or_skip(self, ["--bind", source, top], "a bind mount")
        mount_or_skip(self, ["-o", "remount,bind,ro", top], "a read-only bind mount")
        for args, replies in ((["-d", top + "/f."], REFUSED_AT_MAIL),
                              (["-d", top + "/new/f."], REFUSED_AT_MAIL),
                              (["-D", top + "/all"], REFUSED_AT_DOT)):
            with self.subTest(args=args):
                sink = self.sink(args)
                self.assertEqual(self.converse(sink, MESSAGE), replies)
                self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: (open|mkdir) [^\n]*: "
                                                rb"Read-only file system\n$")
                self.served_next(sink)
        self.assertEqual(os.listdir(source), [])


class FailingWriteTest(support.BothEngines, unittest.TestCase):
    """Failures injected into the capture writer (in-process), so that
    they run everywhere."""

    def test_D_append_failing_half_way_leaves_no_partial_record(self):
        # The append of a spilled (multi-megabyte) record fails after its
        # first megabyte: the -D file must be as it was before.
        top = support.temp_dir(self)
        path = os.path.join(top, "all")
        sink = InProcessSink(self, ["-D", path, "-S", START])
        data, _ = sink.converse(MESSAGE)
        self.assertIn(OK, data)
        before = read(path)
        target = os.stat(path).st_ino
        real_write = dump._write_all
        calls = []

        def failing_write(fd, data):
            if os.fstat(fd).st_ino == target:
                calls.append(len(data))
                if len(calls) == 2:
                    real_write(fd, bytes(data)[:len(data) // 2])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_write(fd, data)
        with mock.patch.object(dump, "_write_all", failing_write):
            data, _ = sink.converse(big_message(3 << 20, b"2"))
        self.assertGreaterEqual(len(calls), 2, "the record was not written in pieces")
        self.assertIn(b"354 End data with <CR><LF>.<CR><LF>\r\n" + FAILED, data)
        self.assertEqual(sink.stderr(), b"smtp-sink: warning: append file %s: No space left "
                                        b"on device\n" % path.encode())
        self.assertEqual(len(read(path)), len(before), "a partial record was left in the file")
        self.assertEqual(read(path), before)
        data, _ = sink.converse(MESSAGE)                    # serves the next client
        self.assertIn(OK, data)
        self.assertEqual(len(records(read(path))), 2)

    def test_d_spill_write_fails(self):
        # -d: a write failing while a big message streams to disk: 451,
        # the half-written file is removed.
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["-d", top + "/f."])
        real_write = dump._write_all
        calls = []

        def failing_write(fd, data):
            calls.append(len(data))
            if len(calls) == 2:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_write(fd, data)
        with mock.patch.object(dump, "_write_all", failing_write):
            data, _ = sink.converse(big_message(4 << 20))
        self.assertIn(b"354 End data with <CR><LF>.<CR><LF>\r\n" + FAILED, data)
        self.assertNotIn(OK, data)
        self.assertEqual(files_under(top), [])
        self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: append file [^\n]*: "
                                        rb"Input/output error\n$")


class TerminateTest(support.BothEngines, unittest.TestCase):
    """SIGTERM while big records are being appended to a -D file by several
    clients: the record being written is finished, the others are not
    started, and the process then ends as killed by SIGTERM."""

    CLIENTS = 4
    SIZE = 16 << 20
    TRIALS = 3

    def test_sigterm_during_appends(self):
        top = support.temp_dir(self)
        path = os.path.join(top, "all")
        caught_mid_record = 0
        for trial in range(self.TRIALS):
            before = os.path.getsize(path) if os.path.exists(path) else 0
            sink = load.SinkProcess(self, ["-D", path, "-S", START])
            bodies = [bytes([0x61 + trial * self.CLIENTS + n]) * self.SIZE + b"\r\n"
                      for n in range(self.CLIENTS)]
            clients = [load.Client([load.TRANSACTION, body, b".\r\n", load.QUIT])
                       for body in bodies]
            seen = []

            def terminate_once_writing():
                # SIGTERM as soon as the first record starts to land.
                deadline = time.monotonic() + support.TIMEOUT
                while time.monotonic() < deadline:
                    size = os.path.getsize(path) if os.path.exists(path) else 0
                    if size > before:
                        sink.signal(signal.SIGTERM)
                        seen.append(size - before)
                        return
                    time.sleep(0.0005)
            watcher = threading.Thread(target=terminate_once_writing)
            watcher.start()
            try:
                load.Clients(sink.address).run(clients)
            finally:
                watcher.join(support.TIMEOUT + 5)
            self.assertEqual(sink.wait(), -signal.SIGTERM)
            self.assertTrue(seen, "the sink wrote nothing")
            stored = os.path.getsize(path) - before
            caught_mid_record += seen[0] < stored
            self.assertEqual(sink.stderr(), b"")
        # Every record in the file is whole.
        content = read(path)
        found = records(content)
        self.assertEqual(content[:len(MARK)], MARK)
        for record in found:
            match = RECEIVED.search(record)
            self.assertIsNotNone(match, record[:500])
            body = record[match.end():]
            self.assertEqual(body, body[:1] * self.SIZE + b"\n\n",
                             "a partial record: %d bytes" % len(record))
        self.assertGreaterEqual(len(found), 1)
        load.report("SIGTERM during -D appends", trials=self.TRIALS, records=len(found),
                    caught_mid_record=caught_mid_record)


if __name__ == "__main__":
    unittest.main()
