"""smtpcore.procs: counters shared by forked workers, and their supervisor."""

import io
import os
import signal
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
