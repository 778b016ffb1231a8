"""smtpcore's two drivers (threads, loop) behind one interface, and what
each engine looks like from outside: how many threads a sink or a source
runs, and a sink's memory with a thousand idle sessions."""

import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
from unittest import mock

from smtpcore import engine, threads
from smtpcore.engine import PARKED, READABLE, WRITABLE
from tests import load, support


class Probe(engine.Waiter):
    """A session whose steps are a generator function given steps(self)."""

    def __init__(self, steps, fd=-1):
        self.fd = fd
        self.log = []
        self.threads = set()
        self.steps = steps(self)


def pair(test):
    a, b = socket.socketpair()
    for sock in (a, b):
        sock.setblocking(False)
        test.addCleanup(sock.close)
    return a, b


class DriverCase:
    """The same tests for each driver (ENGINE)."""

    ENGINE = None

    def setUp(self):
        # drive() in the caller's thread keeps it to one CPU, as it should
        # in a tool; the tests that follow must still see every CPU.
        allowed = os.sched_getaffinity(0)
        self.addCleanup(os.sched_setaffinity, 0, allowed)

    def driver(self, wakeable=True):
        driver = engine.new_driver(self.ENGINE, wakeable=wakeable)
        self.addCleanup(driver.close)
        return driver

    def run_probes(self, steps, count):
        """count Probes of steps started on a driver, run to their end."""
        driver = self.driver()
        probes = [Probe(steps) for _ in range(count)]
        for probe in probes:
            driver.start(probe)
        self.assertIsNone(self.run_bounded(driver))
        return probes

    def run_bounded(self, driver):
        """driver.run() to its end, bounded by a timeout; what it raised."""
        return self.run_in_background(driver)()

    def run_in_background(self, driver):
        """driver.run() in a thread of its own; returns a function that
        waits (bounded) for it to end and returns what run() raised."""
        failure = []

        def target():
            try:
                driver.run()
            except BaseException as err:      # what a session raised comes out here
                failure.append(err)
        runner = threading.Thread(target=target)
        runner.start()

        def join():
            runner.join(support.TIMEOUT)
            if runner.is_alive():
                driver.stop()
                runner.join(support.TIMEOUT)
                self.fail("run() did not return")
            return failure[0] if failure else None
        self.addCleanup(join)
        return join

    def test_readable_and_writable(self):
        a, b = pair(self)

        def steps(me):
            me.log.append((yield WRITABLE))
            a.send(b"ping")
            me.deadline = time.monotonic() + support.TIMEOUT
            me.log.append((yield READABLE))
            me.log.append(a.recv(10))
        probe = Probe(steps, a.fileno())
        driver = self.driver()
        driver.start(probe)
        join = self.run_in_background(driver)
        support.wait_until(lambda: self.readable(b), what="the ping")
        self.assertEqual(b.recv(10), b"ping")
        b.send(b"pong")
        self.assertIsNone(join())
        self.assertEqual(probe.log, [True, True, b"pong"])

    @staticmethod
    def readable(sock):
        try:
            return sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return b""

    def test_deadline_passed(self):
        a, _ = pair(self)

        def steps(me):
            me.deadline = time.monotonic() + 0.05
            started = time.monotonic()
            me.log.append((yield READABLE))
            me.log.append(time.monotonic() - started)
        probe = Probe(steps, a.fileno())
        driver = self.driver()
        driver.start(probe)
        self.assertIsNone(self.run_bounded(driver))
        self.assertIs(probe.log[0], False)
        self.assertGreaterEqual(probe.log[1], 0.05)

    def test_pause_none_and_park(self):
        """A pause lasts as long as asked; None carries on; a parked session
        goes on when another wakes it (with the value it was given)."""
        driver = self.driver()

        def sleeper(me):
            me.log.append((yield PARKED))
            me.log.append("woken")

        def waker(me):
            started = time.monotonic()
            yield 0.1
            me.log.append(time.monotonic() - started)
            me.log.append((yield None))
            driver.wake(parked, "hello")
        parked, pausing = Probe(sleeper), Probe(waker)
        driver.start(parked)
        driver.start(pausing)
        self.assertIsNone(self.run_bounded(driver))
        self.assertGreaterEqual(pausing.log[0], 0.1)
        self.assertEqual(pausing.log[1:], [True])
        self.assertEqual(parked.log, ["hello", "woken"])

    def test_stop_cuts_sessions_off_at_their_wait(self):
        """stop() from another thread: run() returns, and each session's
        clean-up runs (GeneratorExit at its wait): one waiting on a socket
        with no deadline, one parked, one in a long pause."""
        a, _ = pair(self)
        cleaned = []

        def on_socket(me):
            try:
                yield READABLE
            finally:
                cleaned.append("socket")

        def parked(me):
            try:
                yield PARKED
            finally:
                cleaned.append("parked")

        def pausing(me):
            try:
                yield 60
            finally:
                cleaned.append("pause")
        driver = self.driver()
        for steps in (on_socket, parked, pausing):
            driver.start(Probe(steps, a.fileno()))
        stopper = threading.Timer(0.1, driver.stop)
        stopper.start()
        self.addCleanup(stopper.join)
        started = time.monotonic()
        self.assertIsNone(self.run_bounded(driver))
        self.assertLess(time.monotonic() - started, 30)
        self.assertTrue(driver.stopped)
        if self.ENGINE == "loop":       # the loop leaves them to their owner
            self.assertEqual(cleaned, [])
        else:
            driver.close()
            self.assertEqual(sorted(cleaned), ["parked", "pause", "socket"])

    def test_an_exception_comes_out_of_run(self):
        class Boom(Exception):
            pass

        def steps(me):
            yield None
            raise Boom("session")
        driver = self.driver()
        driver.start(Probe(steps))
        self.assertIsInstance(self.run_bounded(driver), Boom)


class ThreadDriverTest(DriverCase, unittest.TestCase):
    ENGINE = "threads"

    def test_a_thread_per_session(self):
        main = threading.get_ident()
        barrier = threading.Barrier(3, timeout=support.TIMEOUT)

        def steps(me):
            me.threads.add(threading.get_ident())
            yield None
            barrier.wait()              # all three run at once
            me.threads.add(threading.get_ident())
        probes = self.run_probes(steps, 3)
        idents = [probe.threads for probe in probes]
        self.assertTrue(all(len(each) == 1 for each in idents))
        self.assertEqual(len(set.union(*idents)), 3)
        self.assertNotIn(main, set.union(*idents))

    def test_a_failure_is_kept_before_its_session_ends(self):
        # run() once saw the failed session gone before fail() had kept
        # its exception, and returned as if all went well (smtp-source:
        # a fatal line, and exit status 0).  fail() comes late here.
        driver = self.driver()
        fail, released = driver.fail, threading.Event()

        def late_fail(error):
            released.wait(support.TIMEOUT)
            fail(error)
        driver.fail = late_fail

        def steps(me):
            yield None
            raise ValueError("boom")
        driver.start(Probe(steps))
        try:
            outcome = self.run_bounded(driver)
        finally:
            released.set()
        self.assertIsInstance(outcome, ValueError)

    def test_session_threads_leave_signals_to_the_main_thread(self):
        """Python runs signal handlers in the main thread; a SIGTERM taken
        by a session thread would not wake a main thread waiting in its
        selector (a sink once slept on after SIGTERM)."""
        blocked = []

        def steps(me):
            with open("/proc/self/task/%d/status" % threading.get_native_id()) as status:
                mask = [int(line.split()[1], 16) for line in status
                        if line.startswith("SigBlk:")][0]
            blocked.extend(sig for sig in threads.ASYNC_SIGNALS if mask & (1 << (sig - 1)))
            yield None
        driver = self.driver()
        driver.start(Probe(steps))
        self.assertIsNone(self.run_bounded(driver))
        self.assertEqual(sorted(blocked), sorted(threads.ASYNC_SIGNALS))
        self.assertIn(signal.SIGTERM, blocked)
        self.assertNotIn(signal.SIGTERM, signal.pthread_sigmask(signal.SIG_BLOCK, []))

    def test_session_threads_keep_to_one_cpu(self):
        """The threads of a process take turns at the interpreter lock:
        kept to one CPU, a hand-over wakes no thread on another core."""
        allowed = os.sched_getaffinity(0)
        if len(allowed) < 2:
            raise unittest.SkipTest("one CPU: nothing to keep to")
        seen = []

        def steps(me):
            seen.append(os.sched_getaffinity(0))
            yield None
        driver = self.driver()
        self.assertIn(driver.cpu, allowed)
        for _ in range(3):
            driver.start(Probe(steps))
        self.assertIsNone(self.run_bounded(driver))
        self.assertEqual(seen, [{driver.cpu}] * 3)
        self.assertEqual(os.sched_getaffinity(0), allowed)     # not the caller's

    def test_workers_keep_to_cpus_of_their_own(self):
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            raise unittest.SkipTest("one CPU: nothing to share")
        cpus = [threads.one_cpu(worker) for worker in range(len(allowed))]
        self.assertEqual(cpus, allowed)

    def test_drive_runs_in_the_callers_thread(self):
        def steps(me):
            me.threads.add(threading.get_ident())
            yield 0.01
            me.threads.add(threading.get_ident())
        probe = Probe(steps)
        self.driver().drive(probe)
        self.assertEqual(probe.threads, {threading.get_ident()})

    def test_make_poller_holds_one_descriptor(self):
        """As Postfix's poller does after the first socket (the numbers of
        later sockets show in smtp-source's Message-Ids)."""
        driver = self.driver(wakeable=False)
        with socket.socket() as first:
            driver.make_poller()
            driver.make_poller()            # once only
            with socket.socket() as second:
                self.assertEqual(second.fileno(), first.fileno() + 2)


class ThreadDriverSelectTest(ThreadDriverTest):
    """The same, on a selector without a poll object of its own (not
    Linux's PollSelector): waits go through select()."""

    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(threads, "_Selector", selectors.SelectSelector)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_waits_go_through_select(self):
        calls = []
        select = selectors.SelectSelector.select

        def counted(selector, timeout=None):
            calls.append(timeout)
            return select(selector, timeout)
        with mock.patch.object(selectors.SelectSelector, "select", counted):
            self.test_deadline_passed()
        self.assertTrue(calls)


class LoopTest(DriverCase, unittest.TestCase):
    ENGINE = "loop"

    def test_one_thread_for_all(self):
        def steps(me):                  # (start() runs it up to its first wait)
            yield 0.01
            me.threads.add(threading.get_ident())
            yield None
            me.threads.add(threading.get_ident())
        probes = self.run_probes(steps, 3)
        self.assertEqual(len(set.union(*(probe.threads for probe in probes))), 1)

    def test_make_poller_holds_one_descriptor(self):
        driver = self.driver(wakeable=False)
        with socket.socket() as first:
            driver.make_poller()
            with socket.socket() as second:
                self.assertEqual(second.fileno(), first.fileno() + 2)


def thread_count(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def cpus_allowed(pid, task):
    with open("/proc/%d/task/%s/status" % (pid, task)) as status:
        return [line.split()[1] for line in status if line.startswith("Cpus_allowed_list:")][0]


class ThreadsSeenFromOutsideTest(unittest.TestCase):
    """How many threads each engine runs, counted in /proc."""

    def sink(self, *options):
        port = support.free_port()
        server = support.Server(support.python_cmd(support.SINK, *(
            support.PRIVS + list(options) + ["127.0.0.1:%d" % port, "1100"])),
            ("127.0.0.1", port), socket.AF_INET).start(self)
        return server, port

    def idle_sessions(self, port, count):
        """count connections, each greeted (so being served), left idle."""
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(count):
            socks.append(support.connect(("127.0.0.1", port), socket.AF_INET))
        for sock in socks:
            self.assertTrue(support.recv_until(sock, b"\r\n").startswith(b"220 "))
        return socks

    def test_sink_threads(self):
        for option, expected in (([], 21), (["--engine=loop"], 1)):
            with self.subTest(option=option):
                server, port = self.sink(*option)
                socks = self.idle_sessions(port, 20)
                self.assertEqual(thread_count(server.proc.pid), expected)
                cpus = {cpus_allowed(server.proc.pid, task)
                        for task in os.listdir("/proc/%d/task" % server.proc.pid)}
                if option == [] and len(os.sched_getaffinity(0)) > 1:
                    self.assertEqual(len(cpus), 1, cpus)    # all on one CPU
                    self.assertTrue(cpus.pop().isdigit())   # one CPU, not a range
                for sock in socks:
                    sock.close()
                server.stop()

    def test_source_threads(self):
        """Eight sessions waiting for their greeting: eight threads and the
        main one, or one."""
        for option, expected in (([], 9), (["--engine=loop"], 1)):
            with self.subTest(option=option):
                with socket.socket() as listener:
                    listener.bind(("127.0.0.1", 0))
                    listener.listen(16)
                    port = listener.getsockname()[1]
                    proc = subprocess.Popen(support.python_cmd(support.SOURCE, *(
                        option + ["-s", "8", "-m", "8", "-M", "x.example",
                                  "127.0.0.1:%d" % port])),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    self.addCleanup(proc.wait)
                    self.addCleanup(proc.kill)
                    accepted = []
                    self.addCleanup(lambda accepted=accepted: [s.close() for s in accepted])
                    listener.settimeout(support.TIMEOUT)
                    for _ in range(8):
                        accepted.append(listener.accept()[0])
                    support.wait_until(lambda: thread_count(proc.pid) == expected,
                                       what="%d threads" % expected)
                    proc.kill()

    def test_sink_with_1000_idle_sessions_stays_small(self):
        """Under the threads engine, in less than 64 MB (threads have small
        stacks, and little else each)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 2200:
            raise unittest.SkipTest("needs 2200 descriptors, the limit is %d" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2200), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        server, port = self.sink("-m", "1000")
        self.idle_sessions(port, 1000)
        self.assertEqual(thread_count(server.proc.pid), 1001)
        with open("/proc/%d/status" % server.proc.pid) as status:
            peak = [int(line.split()[1]) for line in status if line.startswith("VmHWM:")][0]
        load.report("1000 idle sessions, threads engine", peak_rss_kB=peak)
        self.assertLess(peak, 64 * 1024)


if __name__ == "__main__":
    unittest.main()
