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

The writer's state is in shared memory, so that --procs workers, which
inherit the writer of stdout from the process that forked them, warn once
for the whole group.
"""

import errno
import mmap
import os
import stat
import sys

from smtpcore import endpoints

STDOUT = 1              # the descriptor, not sys.stdout: nothing is buffered,
                        # so nothing is left for Python to fail on at exit

FAILING, LOST, GONE = range(3)      # slots of the shared state


class LineWriter:
    """Writes records to a file descriptor; see the module docstring."""

    def __init__(self, fd, name, msg):
        """name: what the warnings call the output ("stdout", a path)."""
        self.fd, self.name, self.msg = fd, name, msg
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
        fd, view, done = self.fd, memoryview(data), 0
        try:
            while done < len(view):
                done += os.write(fd, view[done:])   # more than once only if cut short
        except OSError:
            if done:
                self._undo(done)
            raise

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


_stdout = []


def stdout(msg):
    """The writer of standard output, one for the program: made on first
    use (with --procs before the fork, so that the workers share it)."""
    if not _stdout:
        # Python found no descriptor 1 when it started (sys.stdout is None):
        # a socket may have that number now, and must not get the lines.
        fd = STDOUT if sys.stdout is not None else -1
        _stdout.append(LineWriter(fd, "stdout", msg))
    return _stdout[0]
