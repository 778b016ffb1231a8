"""smtpcore.procs: counters shared by forked workers, and their supervisor."""

import io
import os
import signal
import time
import unittest

from smtpcore import messages, procs


class SharedCountersTest(unittest.TestCase):
    def test_children_add_up(self):
        counters = procs.SharedCounters(["messages", "sessions"])
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                for _ in range(500):
                    counters.add("messages")
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        self.assertEqual(counters.snapshot(), {"messages": 2000, "sessions": 0})

    def test_read_without_the_lock_is_never_torn(self):
        # smtp_source.py --procs reads "remaining" without the lock to decide
        # whether to QUIT; a read during another process's write must give
        # the old value or the new one (a 0 here once ended a session early).
        counters = procs.SharedCounters(["remaining", "done"])
        values = (1 << 40) + 1, (1 << 40) + 2
        counters["remaining"] = values[0]
        pid = os.fork()
        if pid == 0:
            for _ in range(200000):
                counters["remaining"] = values[1]
                counters["remaining"] = values[0]
            counters["done"] = 1
            os._exit(0)
        seen, deadline = set(), time.monotonic() + 30
        while not counters["done"] and time.monotonic() < deadline:
            for _ in range(1000):
                seen.add(counters["remaining"])
        _, status = os.waitpid(pid, 0)
        self.assertEqual((status, counters["done"]), (0, 1))
        self.assertLessEqual(seen, set(values))


class WorkerResultsTest(unittest.TestCase):
    def test_what_each_worker_left(self):
        results = procs.WorkerResults(3)
        self.addCleanup(results.close)
        pids = []
        for index in range(3):
            pid = os.fork()
            if pid == 0:
                if index != 1:              # worker 1 dies leaving nothing
                    results.put(index, {"worker": index, "samples": [index] * 1000})
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            self.assertEqual(os.waitpid(pid, 0)[1], 0)
        self.assertEqual(list(results.collect()), [
            (0, {"worker": 0, "samples": [0] * 1000}), (1, None),
            (2, {"worker": 2, "samples": [2] * 1000})])
        self.assertEqual(results.files, [])     # closed


class SupervisorTest(unittest.TestCase):
    def test_dead_worker_is_replaced_and_reported(self):
        err = io.BytesIO()
        msg = messages.Messages("tool", stream=err)
        counters = procs.SharedCounters(["starts"])

        def worker(index):
            starts = counters.add("starts")
            if starts == 1:
                os.kill(os.getpid(), signal.SIGKILL)    # the first one dies
            return 0

        status = procs.Supervisor(2, worker, msg).run()
        self.assertEqual(status, (0, None))
        self.assertEqual(counters["starts"], 3)
        self.assertRegex(err.getvalue(), rb"^tool: warning: worker \d \(pid \d+\) died "
                                         rb"with signal 9; starting another\n$")

    def test_request_finish_stops_the_group(self):
        msg = messages.Messages("tool", stream=io.BytesIO())
        supervisor = procs.Supervisor(3, None, msg)

        def worker(index):
            if index == 0:
                supervisor.request_finish()
                return 0
            signal.pause()                  # until the supervisor's SIGTERM
            return 0
        supervisor.worker = worker
        self.assertEqual(supervisor.run(), (0, None))
        self.assertEqual(supervisor.children, {})


if __name__ == "__main__":
    unittest.main()
