"""Capture files (-d, -D, -S) as a user sees them on disk, and what happens
when they cannot be written: never a 250 for a message that was not stored.
(Byte-for-byte agreement with Postfix is in test_sink_differential.)"""

import errno
import os
import re
import stat
import time
import unittest
from unittest import mock

from smtpcore import dump
from tests import support
from tests.support import InProcessSink

MESSAGE = [b"HELO client.example\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
           b"DATA\r\n", b"Subject: s\r\n\r\n.body\r\n.\r\n", b"QUIT\r\n"]
FAILED = b"451 4.3.0 Error: capture file unavailable\r\n"


def files_under(top):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)


class SingleFileTest(support.BothEngines, unittest.TestCase):
    """-d: one file per message."""

    def test_template_directories_and_modes(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["-d", top + "/%Y/%m%d/x."])
        before = time.time()
        data, _ = sink.converse(MESSAGE)
        after = time.time()
        self.assertIn(b"250 2.0.0 Ok\r\n", data)
        [path] = files_under(top)
        names = {time.strftime(top + "/%Y/%m%d/x.", time.localtime(t)) for t in (before, after)}
        self.assertIn(path[:-8], names)
        self.assertRegex(path[-8:], "^[0-9a-f]{8}$")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644 & ~current_umask())
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
                         0o755 & ~current_umask())
        with open(path, "rb") as f:
            record = f.read()
        self.assertIn(b" id %s;\n" % path[-8:].encode(), record)
        self.assertTrue(record.startswith(b"X-Client-Addr: 127.0.0.1\nX-Client-Proto: SMTP\n"
                                          b"X-Helo-Args: client.example\nX-Mail-Args: <a@b>\n"
                                          b"X-Rcpt-Args: <c@d>\nReceived: from client.example "
                                          b"([127.0.0.1])\n\tby smtp-sink (smtp-sink) with SMTP id "))
        self.assertTrue(record.endswith(b"\nSubject: s\n\nbody\n\n"))

    def test_one_file_per_message(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["-d", top + "/m."])
        sink.converse(MESSAGE[:5] + MESSAGE[1:])
        self.assertEqual(len(files_under(top)), 2)

    def test_large_message_stored_whole(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["-d", top + "/big."])
        body = b"".join(b"%07d " % i + b"x" * 90 + b"\r\n" for i in range(60000))  # ~6 MB
        data, _ = sink.converse(MESSAGE[:4] + [body, b".\r\n", b"QUIT\r\n"])
        self.assertIn(b"250 2.0.0 Ok\r\n", data)
        [path] = files_under(top)
        with open(path, "rb") as f:
            record = f.read()
        self.assertTrue(record.endswith(body.replace(b"\r\n", b"\n") + b"\n"))


class SharedFileTest(support.BothEngines, unittest.TestCase):
    """-D: whole records appended to one file."""

    def test_appends_to_existing_file(self):
        top = support.temp_dir(self)
        path = os.path.join(top, "sub", "all")
        os.mkdir(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(b"earlier run\n")
        sink = InProcessSink(self, ["-D", path, "-S", "From x\\n"])
        sink.converse(MESSAGE)
        sink.converse(MESSAGE[:4] + [b"aborted\r\n"])         # no record
        sink.converse(MESSAGE)
        with open(path, "rb") as f:
            content = f.read()
        self.assertTrue(content.startswith(b"earlier run\nFrom x\nX-Client-Addr: "))
        self.assertEqual(content.count(b"From x\n"), 2)
        self.assertNotIn(b"aborted", content)
        self.assertEqual(files_under(top), [path])            # no temporary files left

    def test_large_records_are_not_interleaved(self):
        top = support.temp_dir(self)
        path = os.path.join(top, "all")
        sink = InProcessSink(self, ["-D", path])
        bodies = [bytes([ord("a") + i]) * 100 + b"\r\n" for i in range(3)]
        clients = []
        for i, line in enumerate(bodies):
            c = support.connect(sink.address, sink.family)
            self.addCleanup(c.close)
            c.sendall(b"MAIL FROM:<%d>\r\nRCPT TO:<r>\r\nDATA\r\n" % i)
            clients.append(c)
        for _ in range(25):                         # 2.5 MB each, in turns
            for c, line in zip(clients, bodies):
                c.sendall(line * 1000)
        for c in clients:
            c.sendall(b".\r\nQUIT\r\n")
            support.recv_all(c)
        with open(path, "rb") as f:
            content = f.read()
        records = re.split(rb"(?=X-Client-Addr: )", content)[1:]
        self.assertEqual(len(records), 3)
        for record in records:
            body = record.split(b"\n", 10)[-1]
            self.assertEqual(len(set(body.replace(b"\n", b""))), 1, "records interleaved")


class CaptureFailureTest(support.BothEngines, unittest.TestCase):
    """A capture that cannot be made or written is never acknowledged."""

    def blocked_dir(self):
        """A directory path that cannot exist (a file is in the way): fails
        for root too."""
        top = support.temp_dir(self)
        with open(os.path.join(top, "file"), "wb"):
            pass
        return os.path.join(top, "file", "sub")

    def test_d_cannot_create(self):
        path = self.blocked_dir()
        sink = InProcessSink(self, ["-d", path + "/f."])
        data, _ = sink.converse(MESSAGE)
        # No transaction: RCPT and DATA are refused, the message lines are
        # taken as (unknown) commands, its "." as the end-of-data command.
        self.assertEqual(data, b"220 smtp-sink ESMTP\r\n250 smtp-sink\r\n" + FAILED +
                         b"503 5.5.1 Error: need MAIL command\r\n"
                         b"503 5.5.1 Error: need RCPT command\r\n"
                         b"500 5.5.1 Error: unknown command\r\n"
                         b"500 5.5.2 Error: unknown command\r\n"
                         b"500 5.5.1 Error: unknown command\r\n"
                         b"250 2.0.0 Ok\r\n221 Bye\r\n")
        self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: open .*/file/sub/f\.[0-9a-f]{8}: "
                                        rb"Not a directory\n$")
        # The sink goes on serving.
        data, _ = sink.converse([b"NOOP\r\n", b"QUIT\r\n"])
        self.assertEqual(data, b"220 smtp-sink ESMTP\r\n250 2.0.0 Ok\r\n221 Bye\r\n")

    def test_D_cannot_open(self):
        path = self.blocked_dir()
        sink = InProcessSink(self, ["-D", path + "/all", "-c"])
        data, _ = sink.converse(MESSAGE)
        self.assertIn(b"354 End data with <CR><LF>.<CR><LF>\r\n" + FAILED + b"221 Bye\r\n", data)
        self.assertNotIn(b"250 2.0.0", data)
        self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: open .*/file/sub/all: "
                                        rb"Not a directory\n$")
        self.assertEqual(sink.stdout(), b"sess=1 quit=1 mesg=0\r")     # not counted

    def test_D_disk_full(self):
        if not os.path.exists("/dev/full"):
            self.skipTest("no /dev/full")
        sink = InProcessSink(self, ["-D", "/dev/full", "-L"])
        data, _ = sink.converse([b"LHLO x\r\n", b"MAIL FROM:<a>\r\n", b"RCPT TO:<b>\r\n",
                                 b"RCPT TO:<c>\r\n", b"DATA\r\n", b"x\r\n.\r\n", b"QUIT\r\n"])
        self.assertIn(b"354 End data with <CR><LF>.<CR><LF>\r\n" + FAILED + FAILED +
                      b"221 Bye\r\n", data)
        self.assertEqual(sink.stderr(), b"smtp-sink: warning: append file /dev/full: "
                                        b"No space left on device\n")

    def test_d_write_fails(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, ["-d", top + "/f."])
        real_write = dump._write_all

        def failing_write(fd, data):
            if b"Subject" in bytes(data):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_write(fd, data)
        with mock.patch.object(dump, "_write_all", failing_write):
            data, _ = sink.converse(MESSAGE)
        self.assertIn(b"354 End data with <CR><LF>.<CR><LF>\r\n" + FAILED, data)
        self.assertRegex(sink.stderr(), rb"warning: append file .*/f\.[0-9a-f]{8}: "
                                        rb"Input/output error\n")
        self.assertEqual(files_under(top), [])          # nothing half-written left

    def test_D_symlink_is_not_followed(self):
        top = support.temp_dir(self)
        target = os.path.join(top, "target")
        with open(target, "wb") as f:
            f.write(b"precious\n")
        os.symlink(target, os.path.join(top, "all"))
        sink = InProcessSink(self, ["-D", os.path.join(top, "all")])
        data, _ = sink.converse(MESSAGE)
        self.assertIn(FAILED, data)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"precious\n")

    def test_mkdir_fails(self):
        # /proc refuses new directories, even to root.
        sink = InProcessSink(self, ["-d", "/proc/no-such-dir/sub/f."])
        data, _ = sink.converse(MESSAGE)
        self.assertIn(FAILED, data)
        self.assertRegex(sink.stderr(), rb"^smtp-sink: warning: mkdir /proc/no-such-dir/sub: "
                                        rb"[A-Z][^\n]+\n$")

    def test_recovers_after_failure(self):
        top = support.temp_dir(self)
        blocker = os.path.join(top, "d")
        with open(blocker, "wb"):
            pass
        sink = InProcessSink(self, ["-d", blocker + "/sub/f."])
        data, _ = sink.converse(MESSAGE)
        self.assertIn(FAILED, data)
        os.unlink(blocker)                  # the administrator fixes it
        data, _ = sink.converse(MESSAGE)
        self.assertIn(b"250 2.0.0 Ok\r\n", data)
        self.assertEqual(len(files_under(blocker)), 1)


class UnstuffTest(unittest.TestCase):
    """dump.unstuff over arbitrary chunk boundaries equals the whole."""

    def test_chunking_does_not_matter(self):
        stream = b"\r\n.a\r\n..b\r\nc\rd\r\n.\r\ne\n.f\r\r\n.g"
        whole = dump.unstuff(stream[2:], stream[:2])
        for cut in range(3, len(stream)):
            first = dump.unstuff(stream[2:cut], stream[:2])
            second = dump.unstuff(stream[cut:], stream[cut - 2:cut])
            self.assertEqual(first + second, whole, cut)
        self.assertEqual(whole, b"a\n.b\ncd\n\ne\n.f\ng")


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    unittest.main()
