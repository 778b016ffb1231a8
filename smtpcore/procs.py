"""Several processes of one tool (--procs=N): shared counters, supervision.

One CPython process uses about one core.  With --procs=N a tool forks N
workers that each run the usual event loop; what must be counted across
all of them (-c, -M, -n, -N numbers, statistics) lives in a small block of
shared memory made before the fork, updated under one lock.

    counters = SharedCounters(["sessions", "quits", "messages"])
    ... fork ...
    with counters.lock:                 # in any process
        counters["messages"] += 1
        line = counters.snapshot()

The Supervisor starts the workers, replaces one that dies (and says so),
and stops them all on request, on SIGTERM/SIGINT, or when a worker asks
for the whole group to end (-M, -n).  WorkerResults carries what each
worker leaves for the first process when it ends (smtp-source's report
figures).
"""

import mmap
import os
import pickle
import signal
import sys
import threading
import time
import traceback

MAX_PROCS = 256                 # --procs: at most so many processes


class WorkerResults:
    """A temporary file per worker, made before the fork: a worker put()s
    one object in its own as it ends, the first process collect()s them."""

    def __init__(self, workers):
        import tempfile
        self.files = []
        try:
            for _ in range(workers):
                self.files.append(tempfile.TemporaryFile())
        except OSError:
            self.close()
            raise

    def put(self, index, value):
        self.files[index].write(pickle.dumps(value))
        self.files[index].flush()

    def collect(self):
        """(worker index, its object, or None if it left none), for each
        worker; the files are closed after."""
        try:
            for index, result in enumerate(self.files):
                result.seek(0)
                try:
                    value = pickle.load(result)
                except (EOFError, pickle.UnpicklingError, ValueError):
                    value = None
                yield index, value
        finally:
            self.close()

    def close(self):
        for result in self.files:
            result.close()
        self.files = []


class SharedCounters:
    """Named 64-bit counters in anonymous shared memory (inherited by
    forked processes), with one lock for consistent updates and reads.

    A counter is one aligned 8-byte slot written with a single store, so
    a read without the lock sees the old value or the new one, never a
    mixture.  (struct.pack_into would not do: it clears the slot before
    it writes, and another process could read that 0.)"""

    def __init__(self, names):
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.slots = memoryview(mmap.mmap(-1, 8 * max(1, len(self.names)))).cast("q")
        import multiprocessing      # (only here: it takes a while to import)
        self.lock = multiprocessing.Lock()

    def __getitem__(self, name):
        return self.slots[self.index[name]]

    def __setitem__(self, name, value):
        self.slots[self.index[name]] = value

    def add(self, name, amount=1):
        """Add under the lock; returns the new value."""
        with self.lock:
            value = self[name] + amount
            self[name] = value
            return value

    def snapshot(self):
        """All counters as a dict (take the lock yourself for consistency)."""
        return {name: self[name] for name in self.names}


class LocalCounts:
    """Named counters of this process only: plain attributes, and the lock
    to update them under (the same interface as SharedCounts)."""

    def __init__(self, names):
        for name in names:
            setattr(self, name, 0)
        self.lock = threading.Lock()


class SharedCounts:
    """Named counters that forked processes share (SharedCounters, read
    and written as attributes).  Update them under `with counts.lock:`."""

    def __init__(self, names):
        object.__setattr__(self, "_shared", SharedCounters(names))
        object.__setattr__(self, "lock", self._shared.lock)

    def __getattr__(self, name):
        try:
            return self._shared[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self._shared[name] = value


class Supervisor:
    """Runs worker(index) in `count` forked processes until stop().

    worker(index) is called in the child and its return value is the
    child's exit status (0: done with its share).  The parent calls run(),
    which returns (0, None) when every worker is done or one asked the
    group to end (request_finish), or (None, signal number) when SIGTERM
    or SIGINT stopped the group.  A worker that dies otherwise is reported
    and replaced; with replace=False the group is stopped instead and
    run() returns (1, None).
    """

    def __init__(self, count, worker, msg, tick=0, on_tick=None, on_signal=None,
                 replace=True):
        """tick/on_tick: call on_tick() every tick seconds; on_signal: a dict
        signal number -> what to call when the parent gets that signal."""
        self.count, self.worker, self.msg = count, worker, msg
        self.replace, self.failed = replace, False
        self.tick, self.on_tick = tick, on_tick
        self.on_signal = dict(on_signal or {})
        self.children = {}                  # pid -> index
        self.parent = os.getpid()

    def request_finish(self):
        """From a worker: end the whole group with status 0 (-M, -n)."""
        os.kill(self.parent, signal.SIGUSR2)

    def run(self, started=None):
        """Start the workers and supervise them; returns (status, signal).
        started(): called once the signals are blocked, before the first
        fork (a thread started there cannot take the group's signals)."""
        wanted = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR2}
        wanted |= set(self.on_signal)
        self.wanted = wanted
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
        try:
            if started is not None:
                started()
            for index in range(self.count):
                try:
                    self._spawn(index, old_mask)
                except OSError as err:      # EAGAIN, ENOMEM: none or all
                    self.stop()
                    self.msg.fatal("fork: %s" % os.strerror(err.errno))
            due = time.monotonic() + self.tick
            while True:
                if self.tick > 0:
                    info = signal.sigtimedwait(wanted, max(0.0, due - time.monotonic()))
                    if info is None:
                        self.on_tick()
                        due = max(due + self.tick, time.monotonic())
                        continue
                else:
                    info = signal.sigwaitinfo(wanted)
                if info.si_signo in self.on_signal:
                    self.on_signal[info.si_signo]()
                elif info.si_signo == signal.SIGCHLD:
                    self._reap(old_mask)
                    if self.failed:
                        self.stop()
                        return 1, None
                    if not self.children:
                        return 0, None
                elif info.si_signo == signal.SIGUSR2:
                    self.stop()
                    return 0, None
                else:
                    self.stop()
                    return None, info.si_signo
        finally:
            # Late requests from other workers, or late SIGUSR1s, must not
            # kill us once the signals are unblocked: drop them.
            for signo in [signal.SIGUSR2] + list(self.on_signal):
                signal.signal(signo, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _spawn(self, index, old_mask):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, self.wanted)
                status = self.worker(index)
            except SystemExit as exit:
                status = exit.code if isinstance(exit.code, int) else 1
            except BaseException:
                traceback.print_exc()       # a bug: say where
                status = 1
            finally:
                try:
                    sys.stdout.flush()
                except Exception:
                    pass
                os._exit(status or 0)
        self.children[pid] = index

    def _reap(self, old_mask):
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            if index is None:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                continue                    # it finished its share
            if not self.replace:
                self.failed = True          # a fatal error says why; a signal:
                if os.WIFSIGNALED(status):
                    self.msg.warning("worker %d (pid %d) died with signal %d"
                                     % (index, pid, os.WTERMSIG(status)))
                continue
            how = ("exit status %d" % os.WEXITSTATUS(status) if os.WIFEXITED(status)
                   else "signal %d" % os.WTERMSIG(status))
            self.msg.warning("worker %d (pid %d) died with %s; starting another"
                             % (index, pid, how))
            self._spawn(index, old_mask)

    def stop(self):
        """SIGTERM every worker and wait for them all."""
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()
