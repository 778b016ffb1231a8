"""The threads engine (the default; see smtpcore/engine.py): a thread per
session.

Each session runs in a thread of its own, and its waits are plain blocking
calls in that thread:

    READABLE, WRITABLE  a selectors selector of the session's own, on its
                        socket, with the session's deadline as the timeout
                        (a PollSelector: it holds no descriptor, so that
                        smtp-source's descriptors are numbered as Postfix's)
    a pause             an Event that stop() sets, with the pause as timeout
    PARKED              an Event of the session's own that wake() sets

Threads get a small stack (STACK_SIZE): a session needs little, and a sink
may hold a thousand idle ones.  They block the signals that the main
thread handles (ASYNC_SIGNALS).

The threads of a process keep to one CPU (one_cpu(), keep_to()).  Only one
of them runs Python at a time, and each system call hands the interpreter
lock on; with the threads spread over several cores, every hand-over wakes
a thread on another core.  Measured on 2 cores, a sink under Postfix's
smtp-source -s 20 -d: 54 futex calls and 29 context switches per message,
5 000 messages a second; kept to one core: 0.2 futex calls and 4 context
switches per message, 13 000 to 15 000 messages a second.  The kernel then
moves other processes (the load generator) to the other cores.

stop() must also reach a thread blocked on its socket with no deadline.  A
wakeable driver holds a pipe that every session's selector watches too;
stop() writes to it.  smtp-source's driver is not wakeable (two more
descriptors would shift the numbers in its Message-Ids), so whoever owns
the sockets shuts their reading side down (which sends nothing) to wake
them.
"""

import math
import os
import selectors
import signal
import threading
import time

from smtpcore.engine import PARKED, READABLE, WRITABLE

STACK_SIZE = 256 * 1024         # bytes; the C default is 8 MiB (of address space)

# Signals a session thread leaves to the main thread.  A signal sent to the
# process goes to any thread that does not block it, and Python runs its
# handler in the main thread only when that thread wakes up: had a session
# thread taken SIGTERM, a main thread waiting in its selector would sleep on.
ASYNC_SIGNALS = {getattr(signal, name) for name in (
    "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGALRM",
    "SIGPIPE", "SIGWINCH") if hasattr(signal, name)}

_start_lock = threading.Lock()


def one_cpu(worker=None):
    """The CPU for the threads of this process: with --procs, the worker's
    share of the CPUs it may use; else the one the calling thread runs on
    now.  None where a process cannot choose (not Linux, or one CPU)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(allowed) < 2:
        return None
    if worker is not None:
        return allowed[worker % len(allowed)]
    try:
        with open("/proc/thread-self/stat") as stat:
            now = int(stat.read().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return allowed[0]
    return now if now in allowed else allowed[0]


def keep_to(cpu):
    """Keep the calling thread on cpu (None: leave it where it may go)."""
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def start_thread(thread):
    """Start a (daemon) thread with a STACK_SIZE stack, blocking
    ASYNC_SIGNALS (it inherits the mask of the thread that starts it)."""
    with _start_lock:
        try:
            old_size = threading.stack_size(STACK_SIZE)
        except (ValueError, RuntimeError):      # not settable here: the default
            old_size = None
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
        try:
            thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            if old_size is not None:
                threading.stack_size(old_size)
    return thread


class ThreadDriver:
    """Runs each session in a thread of its own until it ends or stop()."""

    engine = "threads"

    def __init__(self, wakeable=True, worker=None):
        """worker: the number of a --procs worker (see one_cpu)."""
        self.cpu = one_cpu(worker)  # its threads keep to it
        self.lock = threading.Lock()
        self.ended = threading.Condition(self.lock)     # a session ended
        self.running = {}           # session -> its _Waits, while it runs
        self.threads = set()        # those started by start()
        self.stopped = False
        self.failure = None         # the first exception a session raised
        self.halt = threading.Event()   # ends pauses early at stop()
        self.placeholder = -1       # see make_poller()
        self.local = threading.local()  # .waits: the _Waits of this thread
        self.wake_r = self.wake_w = -1
        if wakeable:
            self.wake_r, self.wake_w = os.pipe()
            os.set_blocking(self.wake_w, False)

    # ---- sessions

    def start(self, session):
        """Run session in a new thread."""
        waits = _Waits(self)
        thread = threading.Thread(target=self._thread, args=(session, waits),
                                  name="session", daemon=True)
        with self.lock:
            self.running[session] = waits
            self.threads.add(thread)
        start_thread(thread)

    def drive(self, session):
        """Run session to its end in the calling thread (smtp-sink's pool of
        session threads calls this).  What the session raises comes out.
        A thread keeps its selector for the sessions it runs next."""
        waits = getattr(self.local, "waits", None)
        if waits is None:               # this thread's first session
            keep_to(self.cpu)
            waits = self.local.waits = _Waits(self)
        with self.lock:
            self.running[session] = waits
        steps = session.steps
        try:
            try:
                wanted = steps.send(None)
            except StopIteration:
                return
            while True:
                if wanted is READABLE or wanted is WRITABLE:
                    value = waits.io(session.fd, wanted is READABLE, session.deadline)
                elif wanted is None:
                    value = True
                elif wanted is PARKED:
                    value = waits.park()
                else:
                    self.halt.wait(wanted)
                    value = None
                if self.stopped:
                    steps.close()           # cut off at its wait: its clean-up runs
                    return
                try:
                    wanted = steps.send(value)
                except StopIteration:
                    return
        except BaseException as error:
            # Kept before the session counts as ended: run() must not see
            # the last session gone and no failure (exit status 0 after a
            # fatal error).  fail() then stops the rest.
            with self.lock:
                if self.failure is None:
                    self.failure = error
            raise
        finally:
            with self.lock:
                self.running.pop(session, None)
                self.ended.notify_all()

    def wake(self, session, value=True):
        """Resume a PARKED session; from any thread."""
        waits = self.running.get(session)
        if waits is not None:
            waits.value = value
            waits.parked.set()

    def forget(self, fd):
        """Nothing to do: a session's selector is its own, and it lets go of
        an old descriptor when the session waits on a new one."""

    def make_poller(self):
        """Postfix's smtp-source makes its poller right after its first
        socket, and the Message-Ids show descriptor numbers.  No thread has a
        poller of its own here, so hold a descriptor in its place."""
        if self.placeholder < 0:
            self.placeholder = os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    # ---- running

    def run(self):
        """Until every started session has ended, or stop(); then raise what
        a session raised, if one did."""
        with self.lock:
            while self.running and not self.stopped:
                # (a timeout: a stop() from a signal handler cannot notify)
                self.ended.wait(1.0)
        if self.failure is not None:
            raise self.failure

    def fail(self, error):
        """A session raised error: keep the first, and stop everything."""
        with self.lock:
            if self.failure is None:
                self.failure = error
        self.stop()

    def stop(self):
        """Cut every session off at its next wait, and end run() soon.  Safe
        from another thread and from a signal handler (it takes no lock
        that the interrupted code might hold)."""
        self.stopped = True
        if self.wake_w >= 0:
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                pass
        self.halt.set()
        for waits in list(self.running.values()):
            waits.parked.set()
        if threading.current_thread() is not threading.main_thread() \
                and self.lock.acquire(blocking=False):
            try:
                self.ended.notify_all()
            finally:
                self.lock.release()

    def close(self):
        """Stop, and wait for the threads of start() to end."""
        self.stop()
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()
        for fd in (self.wake_r, self.wake_w, self.placeholder):
            if fd >= 0:
                os.close(fd)
        self.wake_r = self.wake_w = self.placeholder = -1

    def _thread(self, session, waits):
        keep_to(self.cpu)
        self.local.waits = waits            # (wake() may come before drive())
        try:
            self.drive(session)
        except BaseException as error:     # a fatal error, or a bug: run() raises it
            self.fail(error)
        finally:
            waits.close()
            with self.lock:
                self.threads.discard(threading.current_thread())


_Selector = getattr(selectors, "PollSelector", selectors.SelectSelector)


class _Waits:
    """How a session's thread waits: its selector, its park."""

    __slots__ = ("driver", "selector", "poll", "fd", "readable", "parked", "value")

    def __init__(self, driver):
        self.driver = driver
        self.selector = None        # made at the first I/O wait
        self.poll = None            # ... its poll object's poll()
        self.fd = -1                # ... registered for readable (or writable)
        self.readable = None
        self.parked = threading.Event()
        self.value = True

    def io(self, fd, readable, deadline):
        """Wait until fd is ready (True) or the deadline passed (False)."""
        if fd != self.fd or readable is not self.readable:
            self.watch(fd, readable)
        poll = self.poll
        if poll is None:
            return bool(self.selector.select(
                None if deadline is None else max(0.0, deadline - time.monotonic())))
        if deadline is None:
            return bool(poll())
        left = deadline - time.monotonic()
        return bool(poll(math.ceil(left * 1000) if left > 0 else 0))

    def watch(self, fd, readable):
        """Have the selector watch fd (only) for what the session waits for."""
        events = selectors.EVENT_READ if readable else selectors.EVENT_WRITE
        selector = self.selector
        if selector is None:
            selector = self.selector = _Selector()
            # Every wait calls the selector's own poll object directly,
            # without select()'s list of (key, events): 0.7 us a call
            # instead of 1.3 (timeit); 93 600 instructions a message in the
            # sink instead of 112 500 (callgrind, -s 20 -d).  A selector
            # without one (not Linux's PollSelector) goes through select().
            self.poll = getattr(getattr(selector, "_selector", None), "poll", None)
            if self.driver.wake_r >= 0:
                selector.register(self.driver.wake_r, selectors.EVENT_READ)
        if fd != self.fd:
            if self.fd >= 0:
                selector.unregister(self.fd)
            selector.register(fd, events)
            self.fd = fd
        else:
            selector.modify(fd, events)
        self.readable = readable

    def park(self):
        self.parked.wait()
        self.parked.clear()
        return self.value

    def close(self):
        if self.selector is not None:
            self.selector.close()
            self.selector = None
