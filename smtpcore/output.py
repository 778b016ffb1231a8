"""Report lines to stdout or a file: whole lines, and never the end of the
program.

The counters of smtp-sink -c, its --stats and --verify lines, and
smtp-source's -c count and --report are a report on the work, not the
work: when one cannot be written (the reader of a pipe went away, a full
disk, a file-size limit), the program goes on.  A LineWriter

  * writes each record (a line, or a report of several) with one
    write(2), so that a reader of a pipe or file sees whole records;
  * cuts a regular file back to where a record began when the write
    failed part-way (EFBIG, ENOSPC), so that no reader sees part of one;
  * warns once when writing fails ("warning: write stdout: Broken
    pipe"), drops the records that cannot be written, and says how many
    were lost once writing works again (after EPIPE nothing is tried
    again: that reader never comes back).

Standard output is written as descriptor 1, not through sys.stdout's
buffer (which would keep a failed record and fail on it again at exit),
unless sys.stdout was replaced in-process (contextlib.redirect_stdout, as
tests do when they call main()).  The writer's state is in shared memory,
so that --procs workers, which inherit the writer of stdout from the
process that forked them, warn once for the whole group.
"""

import errno
import mmap
import os
import stat
import sys

from smtpcore import endpoints

STDOUT = 1

FAILING, LOST, GONE = range(3)      # slots of the shared state


class LineWriter:
    """Writes records to a file descriptor; see the module docstring."""

    def __init__(self, fd, name, msg, stream=None):
        """name: what the warnings call the output ("stdout", a path);
        stream: a file object to write to instead of fd (a sys.stdout
        replaced in-process, as by contextlib.redirect_stdout)."""
        self.fd, self.name, self.msg, self.stream = fd, name, msg, stream
        self.state = memoryview(mmap.mmap(-1, 8 * 3)).cast("q")

    def write(self, data):
        """Write one record (bytes); True when it was written whole."""
        state = self.state
        if state[GONE]:
            return False
        try:
            self._write(data)
        except OSError as err:
            if not state[FAILING]:
                state[FAILING] = 1
                self.msg.warning("write %s: %s" % (self.name, endpoints.strerror(err)))
            state[LOST] += 1
            if err.errno == errno.EPIPE:
                state[GONE] = 1
            return False
        if state[FAILING]:
            self.msg.info("write %s: works again; records lost: %d"
                          % (self.name, state[LOST]))
            state[FAILING] = state[LOST] = 0
        return True

    def _write(self, data):
        if self.stream is not None:
            self._write_stream(data)
            return
        fd, view, done = self.fd, memoryview(data), 0
        try:
            while done < len(view):
                done += os.write(fd, view[done:])   # more than once only if cut short
        except OSError:
            if done:
                self._undo(done)
            raise

    def _write_stream(self, data):
        stream = self.stream
        try:
            if hasattr(stream, "buffer"):
                stream.buffer.write(data)
            else:
                stream.write(data.decode("utf-8", "surrogateescape"))
            stream.flush()
        except ValueError:                          # closed
            raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None

    def _undo(self, written):
        """Take back the first `written` bytes of a record that could not be
        written whole (a regular file only: a pipe cannot take them back)."""
        fd = self.fd
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            end = os.lseek(fd, 0, os.SEEK_CUR)     # just after them (O_APPEND too)
            os.ftruncate(fd, end - written)
            os.lseek(fd, end - written, os.SEEK_SET)
        except OSError:
            pass


_stdout = [None, None]          # (sys.stdout, its writer)


def stdout(msg):
    """The writer of standard output, one for the program: made on first
    use (with --procs before the fork, so that the workers share it), and
    again only if sys.stdout was replaced since."""
    if _stdout[0] is not sys.stdout or _stdout[1] is None:
        if sys.stdout is None:
            # Python found no descriptor 1 when it started: a socket may
            # have that number now, and must not get the lines.
            writer = LineWriter(-1, "stdout", msg)
        elif sys.stdout is not sys.__stdout__:      # replaced in-process
            writer = LineWriter(-1, "stdout", msg, stream=sys.stdout)
        else:
            writer = LineWriter(STDOUT, "stdout", msg)
        _stdout[:] = [sys.stdout, writer]
    return _stdout[1]
