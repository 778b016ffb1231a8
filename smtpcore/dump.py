"""Capture files of smtp-sink: -d (a file per message) and -D (one file).

A record is what Postfix's smtp-sink writes for one mail transaction:

    [-S start string]
    X-Client-Addr: 127.0.0.1            ("ipv6:::1", "local")
    X-Client-Proto: ESMTP               (SMTP, ESMTP or LMTP)
    X-Helo-Args: client.example         (only after HELO/EHLO/LHLO)
    X-Mail-Args: <a@b> SIZE=10
    X-Rcpt-Args: <c@d>                  (one per accepted RCPT)
    Received: from client.example ([127.0.0.1])
    \tby smtp-sink (smtp-sink) with ESMTP id 5f0bfc9b;
    \tSun, 22 Nov 2026 03:56:04 +0000 (UTC)
    <message: CRLF -> LF, every CR dropped, dot-unstuffed>
    <an empty line>

File names come from a strftime(3) template expanded at MAIL time; -d adds
8 random hex digits (also the "id" above).  Missing directories are made.

Unlike Postfix, nothing here is fatal: an error raises OSError, the sink
prints a warning and refuses the transaction with a 4xx reply, so that a
message is never acknowledged unless it was stored.
"""

import errno
import fcntl
import functools
import itertools
import os
import socket
import tempfile
import threading
import time

# Keep at most this much of a record in memory; beyond it, write it out.
SPILL_SIZE = 1 << 20

FILE_MODE = 0o644
DIR_MODE = 0o755
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
    | getattr(os, "O_CLOEXEC", 0)
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) \
    | getattr(os, "O_CLOEXEC", 0)

_C_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


def unescape(text):
    """The -S string: C escapes \\a \\b \\f \\n \\r \\t \\v \\\\ and \\ddd.

    As in Postfix, an unknown escape loses its backslash, a trailing
    backslash is dropped, and a NUL (\\0, \\400) ends the string.
    """
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        i += 1
        if ch != 0x5c:                          # not a backslash
            out.append(ch)
            continue
        if i >= len(raw):
            break
        esc = chr(raw[i])
        if "0" <= esc <= "7":
            value = 0
            digits = 0
            while digits < 3 and i < len(raw) and 0x30 <= raw[i] <= 0x37:
                value = value * 8 + raw[i] - 0x30
                i += 1
                digits += 1
            out.append(value & 0xff)
        else:
            out.append(_C_ESCAPES.get(esc, raw[i]))
            i += 1
    nul = out.find(0)
    return bytes(out if nul < 0 else out[:nul])


def per_second(function):
    """function(..., when), remembered for the last whole second of `when`
    it was called with (strftime has no finer unit; a busy sink makes
    thousands of captures a second), and the time zone (tzset())."""
    last = {}

    @functools.wraps(function)
    def cached(*args):
        key = (args[:-1], int(args[-1]), time.timezone, time.tzname)
        value = last.get(key)
        if value is None:
            last.clear()
            value = last[key] = function(*args)
        return value
    return cached


@per_second
def expand_template(template, when):
    """strftime(3) a path template with the local time `when` -> bytes."""
    raw = template.encode("utf-8", "surrogateescape").decode("latin-1")
    if "\0" in raw:
        raw = raw[:raw.index("\0")]
    if raw == "":
        return b""
    return time.strftime(raw, time.localtime(when)).encode("latin-1", "replace")


@per_second
def mail_date(when):
    """RFC 2822 date as Postfix writes it: 'Sun,  5 Mar 2026 07:08:10 +0000 (UTC)'."""
    return time.strftime("%a, %e %b %Y %H:%M:%S %z (%Z)", time.localtime(when))


def make_parent_dirs(path):
    """Create the missing directories of path (a bytes file name), each
    with DIR_MODE under the umask (os.makedirs() would give the upper ones
    0777 under the umask)."""
    parent = os.path.dirname(path)
    missing = []
    while parent and not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent.rstrip(b"/")) if parent.rstrip(b"/") else b""
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise MkdirError(errno.ENOTDIR, os.strerror(errno.ENOTDIR),
                                 missing[0]) from None
        except OSError as err:          # named as Postfix names it: the whole path
            raise MkdirError(err.errno, os.strerror(err.errno), missing[0]) from None


class MkdirError(OSError):
    """A missing directory could not be made (reported as 'mkdir DIR: ...')."""


def unstuff(chunk, before):
    """Message bytes as they go into a record: dot-unstuffed, CRs dropped.

    `before` is the two raw bytes that preceded chunk in the DATA stream
    (b"\\r\\n" at its start): a '.' right after CRLF is removed, as is every
    CR.  A bare LF stays a line end.
    """
    data = (before + chunk).replace(b"\r\n.", b"\r\n")[2:]
    return data.replace(b"\r", b"")


class Capture:
    """One transaction's record on its way to a -d file or a -D file.

    open() at MAIL time (makes the -d file), add() header lines and message
    bytes as they arrive, commit() at end of data, abort() otherwise.
    """

    _append_lock = threading.Lock()     # whole records, one at a time (for
                                        # callers that use threads)

    def __init__(self, template, shared, when):
        self.template, self.shared, self.when = template, shared, when
        self.ident = 0              # the 8-hex id of the Received: header
        self.path = None            # -d: the file; -D: the shared file
        self.fd = -1                # -d file, or the -D spill file
        self.buffer = bytearray()

    def open(self, random_id, tries=100):
        """Pick the id; for -d, create the file exclusively (a fresh id on
        collision, missing directories made on the way)."""
        base = expand_template(self.template, self.when)
        if self.shared:
            self.ident = random_id()
            self.path = base
            return
        for _ in range(tries):
            self.ident = random_id()
            path = base + b"%08x" % self.ident
            try:
                self.fd = os.open(path, _CREATE, FILE_MODE)
            except FileExistsError:
                continue
            except FileNotFoundError:
                make_parent_dirs(path)
                try:
                    self.fd = os.open(path, _CREATE, FILE_MODE)
                except FileExistsError:
                    continue
            self.path = path
            return
        raise OSError(errno.EEXIST, "no unique file name", base)

    def add(self, data):
        self.buffer += data
        if len(self.buffer) >= SPILL_SIZE:
            self._spill()

    def _spill(self):
        if self.fd < 0:                 # -D: an unlinked file beside the target
            directory = os.path.dirname(self.path) or b"."
            make_parent_dirs(self.path)
            handle, name = tempfile.mkstemp(prefix=b".smtp-sink.", dir=directory)
            os.unlink(name)
            self.fd = handle
        _write_all(self.fd, self.buffer)
        del self.buffer[:]

    def commit(self):
        """Store the finished record; raises OSError if it could not be."""
        try:
            if not self.shared:
                _write_all(self.fd, self.buffer)
                return
            if self.fd >= 0:
                self._spill()
            with self._append_lock:
                try:
                    out = os.open(self.path, _APPEND, FILE_MODE)
                except FileNotFoundError:
                    make_parent_dirs(self.path)
                    out = os.open(self.path, _APPEND, FILE_MODE)
                try:
                    fcntl.flock(out, fcntl.LOCK_EX)     # other processes too
                    size = os.lseek(out, 0, os.SEEK_END)
                    try:
                        if self.fd >= 0:
                            _copy_spill(self.fd, out)
                        else:
                            _write_all(out, self.buffer)
                    except OSError:
                        try:
                            os.ftruncate(out, size)     # whole records only
                        except OSError:
                            pass                        # not a regular file
                        raise
                finally:
                    os.close(out)
        except OSError:
            self.abort()
            raise
        finally:
            self._close()

    def abort(self):
        """Drop the transaction: a -d file is removed, -D gets nothing."""
        if not self.shared and self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None
        self._close()

    def _close(self):
        self.buffer = bytearray()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class MaildirCapture(Capture):
    """One transaction's record on its way into a Maildir (--maildir=DIR):
    written to DIR/tmp/NAME, then renamed to DIR/new/NAME at commit, so
    that a reader never sees a partial message; NAME is unique per host,
    process and message (the usual "time.MusecPpidQn.host" form)."""

    _sequence = itertools.count(1)

    def __init__(self, directory, when):
        super().__init__(None, False, when)
        self.directory = os.fsencode(directory)

    def open(self, random_id, tries=100):
        self.ident = random_id()
        for sub in (b"tmp", b"new", b"cur"):
            make_parent_dirs(os.path.join(self.directory, sub, b"x"))
        seconds = int(self.when)
        micro = int((self.when - seconds) * 1e6)
        for _ in range(tries):
            name = b"%d.M%dP%dQ%d.%s" % (seconds, micro, os.getpid(),
                                          next(self._sequence), _maildir_host())
            path = os.path.join(self.directory, b"tmp", name)
            try:
                self.fd = os.open(path, _CREATE, FILE_MODE)
            except FileExistsError:
                continue
            self.path, self.name = path, name
            return
        raise OSError(errno.EEXIST, "no unique file name", self.directory)

    def commit(self):
        try:
            _write_all(self.fd, self.buffer)
            os.close(self.fd)
            self.fd = -1
            os.rename(self.path, os.path.join(self.directory, b"new", self.name))
            self.path = None
        except OSError:
            self.abort()
            raise
        finally:
            self._close()


def _maildir_host():
    """The host name part of a Maildir file name ('/' and ':' escaped)."""
    return socket.gethostname().encode("ascii", "replace") \
        .replace(b"/", b"\\057").replace(b":", b"\\072")


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _copy_spill(src, dst):
    os.lseek(src, 0, os.SEEK_SET)
    while True:
        block = os.read(src, 1 << 20)
        if not block:
            return
        _write_all(dst, block)
