"""The loop engine (--engine=loop; see smtpcore/engine.py): every session
in one thread, on one event loop over epoll (poll where there is none), as
Postfix's tools are built.

In CPython each blocking call of a thread may hand the interpreter lock to
another thread, and with twenty busy sessions those hand-overs (futex
calls, context switches) cost about as much as the SMTP work itself; one
thread and one poller have none of them.  The sessions are the same
generators as under the threads engine: the loop resumes each when what it
yielded is ready (a timer heap for pauses and deadlines, a queue for the
sessions that are ready now).

Why epoll itself, not a selectors selector as the threads engine uses:
selectors wraps every event in a key lookup and every change in a new
SelectorKey, which here costs 12 % more instructions per message on a
busy sink (callgrind, 20 sessions, "-d": 101 000 instead of 90 000),
well above the 3 % that selectors were allowed to cost here (README,
Benchmarks).
"""

import collections
import heapq
import os
import select
import time

from smtpcore.engine import PARKED, READABLE, WRITABLE

POLL_IN = getattr(select, "EPOLLIN", select.POLLIN)
POLL_OUT = getattr(select, "EPOLLOUT", select.POLLOUT)
POLL_ERR = getattr(select, "EPOLLERR", select.POLLERR) | getattr(select, "EPOLLHUP",
                                                                  select.POLLHUP)


class Loop:
    """Runs sessions until none is left or stop() is called."""

    engine = "loop"
    failure = None              # (what a session raises comes out of run() itself)

    def __init__(self, wakeable=True):
        """wakeable: stop() may come from another thread or a signal
        handler (a pipe wakes the poller); a tool that stops only from
        inside its sessions can do without the pipe's two descriptors."""
        self.poller = None
        self.epoll = hasattr(select, "epoll")
        self.waiting = {}           # fd -> the session waiting on it
        self.armed = {}             # fd -> the events the poller watches for
        self.timers = []            # heap of (when, sequence, session, kind)
        self.ready = collections.deque()    # (session, value to send)
        self.sequence = 0
        self.sessions = 0
        self.stopped = False
        self._wake_r = self._wake_w = -1
        if wakeable:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)

    # ---- sessions

    def start(self, session):
        """Run a new session up to its first wait."""
        self.sessions += 1
        self._resume(session, None)

    def wake(self, session, value=True):
        """Resume a PARKED session (from the loop's own thread)."""
        self.ready.append((session, value))

    def forget(self, fd):
        """Stop watching fd; call it right before closing fd (epoll drops a
        closed descriptor by itself, so that costs no system call)."""
        self.waiting.pop(fd, None)
        if self.armed.pop(fd, None) is not None and not self.epoll and self.poller is not None:
            self.poller.unregister(fd)

    def make_poller(self):
        """Make the poller now (it is made lazily otherwise): its descriptor
        number then comes before those of later sockets."""
        if self.poller is None:
            self.poller = select.epoll() if self.epoll else select.poll()
            if self._wake_r >= 0:
                self.poller.register(self._wake_r, POLL_IN)

    # ---- running

    def run(self):
        """Until every session has ended, or stop()."""
        ready, timers, waiting, resume = self.ready, self.timers, self.waiting, self._resume
        self.make_poller()
        while self.sessions > 0 and not self.stopped:
            while ready and not self.stopped:
                session, value = ready.popleft()
                resume(session, value)
            if self.sessions <= 0 or self.stopped:
                break
            timeout = -1.0
            if timers:
                timeout = max(0.0, timers[0][0] - time.monotonic())
            for fd, events in self._poll(timeout):
                session = waiting.pop(fd, None)
                if session is not None:
                    resume(session, True)
                elif fd == self._wake_r:
                    self._drain_wakeups()
                else:                           # nobody asked: stop watching
                    self._arm(fd, 0)
                if self.stopped:
                    break
            if timers:
                self._expire(time.monotonic())

    def stop(self):
        """End run() soon.  Safe from another thread or a signal handler
        (if wakeable): nothing is interrupted, the loop stops between two
        steps."""
        self.stopped = True
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def wakeup_fd(self):
        """The write end of the wake-up pipe (-1: not wakeable); a byte
        written there wakes the poller (see Python's signal.set_wakeup_fd)."""
        return self._wake_w

    def close(self):
        if self.poller is not None and self.epoll:
            self.poller.close()
        self.poller = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # ---- inside

    def _resume(self, session, value):
        try:
            wanted = session.steps.send(value)
        except StopIteration:
            self.sessions -= 1
            return
        if wanted is READABLE or wanted is WRITABLE:
            fd = session.fd
            self.waiting[fd] = session
            events = POLL_IN if wanted is READABLE else POLL_OUT
            if self.armed.get(fd) != events:
                self._arm(fd, events)
            deadline = session.deadline
            if deadline is not None and session.timer_at is None:
                self._push(deadline, session, "deadline")
                session.timer_at = deadline
        elif wanted is None:
            self.ready.append((session, True))
        elif wanted is not PARKED:
            self._push(time.monotonic() + wanted, session, "pause")

    def _push(self, when, session, kind):
        self.sequence += 1
        heapq.heappush(self.timers, (when, self.sequence, session, kind))

    def _expire(self, now):
        """Pauses that are over, and deadlines that passed.  A deadline that
        moved on since it was filed is filed again (lazily, so that a busy
        session does not touch the heap on every read)."""
        timers = self.timers
        while timers and timers[0][0] <= now:
            when, _, session, kind = heapq.heappop(timers)
            if kind == "pause":
                self._resume(session, None)
                continue
            session.timer_at = None
            if self.waiting.get(session.fd) is not session or session.deadline is None:
                continue                        # it is not waiting on I/O now
            if session.deadline > now:
                self._push(session.deadline, session, "deadline")
                session.timer_at = session.deadline
                continue
            del self.waiting[session.fd]
            self._resume(session, False)

    def _arm(self, fd, events):
        if self.poller is None:
            self.make_poller()
        if fd in self.armed:
            self.poller.modify(fd, events)
        else:
            self.poller.register(fd, events)
        self.armed[fd] = events

    def _poll(self, timeout):
        if self.epoll:
            return self.poller.poll(timeout)
        return self.poller.poll(None if timeout < 0 else timeout * 1000)

    def _drain_wakeups(self):
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError:
            pass
