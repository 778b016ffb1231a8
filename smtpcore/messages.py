"""Diagnostics in Postfix's format.

Postfix's tools write one line per diagnostic on stderr, prefixed with the
program name as it was invoked:

    smtp-sink: fatal: bad timeout: abc
    smtp-sink: warning: command line too long
    smtp-sink: connect (AF_INET 127.0.0.1)          (informational, -v)

A fatal error ends the program with exit status 1.  Here fatal() raises
Fatal, which main() turns into that exit status, so that nothing prints a
traceback and tests can call main() in-process.  As when Postfix's process
is gone, nothing is said after the first fatal error (other threads may
meet errors of their own while the program ends), nor while hushed().
"""

import contextlib
import os
import sys
import threading


class Fatal(Exception):
    """A fatal error; the message has already been printed."""

    exit_status = 1


def program_name(argv0, canonical):
    """The name to put in front of diagnostics.

    Postfix uses argv[0] exactly as given.  We do the same for installed
    commands ("smtp-sink", "/usr/local/bin/smtp-sink"), but a Python file name
    ("smtp_sink.py", "smtp-sink.pyz", "__main__.py") is replaced by the
    canonical tool name, so that messages read the same as Postfix's.
    """
    base = os.path.basename(argv0 or "")
    if not base or base.endswith((".py", ".pyz", ".pyc")) or base == "-c":
        return canonical
    return argv0


def to_bytes(text):
    """Encode a diagnostic; undecodable argv bytes come back as they were."""
    if isinstance(text, bytes):
        return text
    return text.encode("utf-8", "surrogateescape")


_PRINTABLE = bytes(c if 0x20 <= c <= 0x7e else 0x3f for c in range(256))


def printable(data):
    """Postfix's printable(): bytes, with each byte that is not printable
    ASCII as '?' (what a diagnostic, a log line or a capture header shows of
    what a peer or the command line gave)."""
    return data.translate(_PRINTABLE)


class Messages:
    """Writes diagnostics; shared by all threads, one whole line at a time.

    With printable=True every text is cleaned as Postfix cleans its own
    diagnostics (the program name in front is left as it is): "bad timeout:
    \\xff" shows as "bad timeout: ?".  libc() writes a line that the C
    library prints itself, which nobody cleans.
    """

    def __init__(self, prog, stream=None, printable=False):
        self.prog = prog
        self.verbose = 0
        self.printable = printable
        self.silent = False         # after a fatal error, or silence()
        self._stream = stream
        self._lock = threading.Lock()

    def _write(self, level, text, clean=True, last=False):
        body = to_bytes(text)
        if clean and self.printable:
            body = printable(body)
        data = to_bytes(self.prog) + b": " + level + body + b"\n"
        stream = self._stream
        if stream is None:
            stream = getattr(sys.stderr, "buffer", None)
        with self._lock:
            if self.silent:
                return
            self.silent = last
            try:
                if stream is None:
                    sys.stderr.write(data.decode("utf-8", "replace"))
                    sys.stderr.flush()
                else:
                    stream.write(data)
                    stream.flush()
            except (OSError, ValueError):
                pass            # stderr closed: nothing sensible to do

    def info(self, text):
        """An informational line (-v); text may be str or raw bytes."""
        self._write(b"", text)

    def libc(self, text):
        """A line of the C library's own, such as getopt(3)'s complaints."""
        self._write(b"", text, clean=False)

    def warning(self, text):
        self._write(b"warning: ", text)

    def error(self, text):
        self._write(b"error: ", text)

    def fatal(self, text):
        self._write(b"fatal: ", text, last=True)
        raise Fatal(text)

    @contextlib.contextmanager
    def hushed(self):
        """Say nothing meanwhile: the sessions are being stopped, and one
        cut off in mid-step has no error to report."""
        with self._lock:
            before, self.silent = self.silent, True
        try:
            yield
        finally:
            with self._lock:
                self.silent = before
