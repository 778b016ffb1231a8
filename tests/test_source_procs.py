"""smtp_source.py --procs=N: the sessions and the message budget split over
N forked processes that together send each message once, number -N
recipients without repeats, count -c as one, merge their --report, and
stop together (a fatal error in one, or SIGTERM to the first).  Over real
sockets, against the scripted fake server."""

import json
import os
import re
import signal
import subprocess
import threading
import unittest

from smtpcore import integrity
from tests import support
from tests.fake_smtp import OURS, SILENCE, FakeServer, run_tool

M = ["-M", "client.example"]
MESSAGE_ID = re.compile(rb"\r\nMessage-Id: <([0-9a-f]+)\.[0-9a-f]+\.[0-9a-f]+@client\.example>")
RCPT_NUMBER = re.compile(rb"RCPT TO:<([0-9]+)foo@client\.example>\r\n\Z")


def messages(connections):
    return [data for conn in connections for data in conn.messages()]


class ProcsTest(support.BothEngines, unittest.TestCase):

    def run_source(self, args, replies=None):
        server = FakeServer(replies).start(self)
        return run_tool(OURS, M + list(args) + ["TARGET"], server)

    def test_each_message_once_and_recipient_numbers_never_repeat(self):
        result = self.run_source(["--procs=3", "-s", "6", "-m", "240", "-d", "-N", "-r", "2",
                                  "--integrity", "-c"])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertEqual(len(result.connections), 6)
        sent = messages(result.connections)
        self.assertEqual(len(sent), 240)
        # One budget: message numbers 0..239, each once, whatever process sent it.
        seqs = []
        for data in sent:
            run, seq, count, intact = integrity.examine(data[:-3])   # no dots to unstuff
            self.assertEqual((count, intact), (240, True))
            seqs.append(seq)
        self.assertEqual(sorted(seqs), list(range(240)))
        # One -N sequence: 1..480 over all processes.
        numbers = [int(RCPT_NUMBER.match(command).group(1)) for conn in result.connections
                   for command in conn.commands() if command.startswith(b"RCPT")]
        self.assertEqual(sorted(numbers), list(range(1, 481)))
        # Three processes really sent them (the Message-Id starts with the pid).
        pids = {int(MESSAGE_ID.search(data).group(1), 16) for data in sent}
        self.assertEqual(len(pids), 3)
        self.assertNotIn(result.pid, pids)
        # -c: one running count for the group, then the end of its line.
        self.assertTrue(result.stdout.endswith(b"\r\n"), result.stdout[-20:])
        counts = [int(n) for n in result.stdout[:-1].split(b"\r") if n]
        self.assertEqual(sorted(counts), list(range(1, 241)))

    def test_more_processes_than_sessions(self):
        result = self.run_source(["--procs=4", "-s", "2", "-m", "10", "-d"])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertEqual(len(result.connections), 2)
        sent = messages(result.connections)
        self.assertEqual(len(sent), 10)
        self.assertEqual(len({MESSAGE_ID.search(data).group(1) for data in sent}), 2)

    def test_report_is_merged(self):
        result = self.run_source(["--procs=2", "-s", "4", "-m", "200", "-d", "-r", "3",
                                  "--report=json"])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        report = json.loads(result.stdout)
        self.assertEqual((report["status"], report["sessions"], report["messages"],
                          report["messages_sent"], report["recipients"]), (0, 4, 200, 200, 600))
        self.assertEqual(report["bytes"], sum(len(data) for data in messages(result.connections)))
        latency = report["latency_ms"]
        self.assertEqual([latency[phase]["count"] for phase in
                          ("connect", "greeting", "helo", "mail", "rcpt", "data", "dot", "quit")],
                         [4, 4, 4, 200, 600, 200, 200, 4])
        for phase in ("mail", "rcpt", "message"):
            row = latency[phase]
            self.assertTrue(row["min"] <= row["p50"] <= row["p90"] <= row["p99"] <= row["max"],
                            row)
        served = {}
        for conn in result.connections:
            for kind, data in conn.events:
                if kind == "S":
                    served[data[:3].decode()] = served.get(data[:3].decode(), 0) + 1
        self.assertEqual(report["replies"], served)
        self.assertEqual(set(report["errors"].values()), {0})

    def test_a_worker_without_a_message(self):
        # -s 4 -m 2 --procs=4: two workers get no message; with a report,
        # their ticker once kept them (and the run) going for ever.
        result = self.run_source(["--procs=4", "-s", "4", "-m", "2", "--report=json"])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        report = json.loads(result.stdout)
        self.assertEqual((report["sessions"], report["messages"]), (2, 2))
        self.assertEqual(len(result.connections), 2)

    def test_stats_0_gives_the_exit_line_only(self):
        # Workers that end at different times: still one line, "exit",
        # with all the messages (an "interval" line came first once).
        result = self.run_source(["--procs=2", "-s", "2", "-m", "4", "--rate=3/s",
                                  "--stats=0"])
        self.assertEqual(result.rc, 0, result)
        lines = [json.loads(line) for line in result.stderr.splitlines()]
        self.assertEqual([(line["event"], line["messages"]) for line in lines], [("exit", 4)])

    def test_rate_is_kept_by_the_group(self):
        # Message k is not due before start + k/rate, whichever process has it.
        result = self.run_source(["--procs=2", "-s", "4", "-m", "21", "-d", "--rate=40/s"])
        self.assertEqual(result.rc, 0, result)
        times = sorted(t for conn in result.connections
                       for (kind, data), t in zip(conn.events, conn.times)
                       if kind == "C" and data.startswith(b"MAIL"))
        self.assertEqual(len(times), 21)
        # By start + k/rate at most k + 1 messages were due: the k-th MAIL
        # to arrive came no earlier (the run starts after the process does;
        # a busy machine only makes messages later; half a second for all,
        # more than a start-up takes).
        for k, arrived in enumerate(times):
            self.assertGreaterEqual(arrived - result.started, k / 40, (k, times))

    def test_a_fatal_error_stops_the_group(self):
        # The first connection's MAIL is rejected (fatal without -A); the
        # others never get a reply, and would wait for ever, as in Postfix.
        # The rejection waits for the second session's MAIL: both are then
        # connected, and counted, before the fatal error stops the group.
        second_at_mail = threading.Event()

        def mail(conn, stage):
            if conn.index == 0:
                second_at_mail.wait(support.TIMEOUT)
                return b"550 5.7.1 go away\r\n"
            second_at_mail.set()
            return SILENCE
        result = self.run_source(["--procs=2", "-s", "2", "-m", "10", "-d", "--report=json"],
                                 {"mail": mail})
        self.assertEqual(result.rc, 1)
        self.assertEqual(result.stderr,
                         b"smtp-source: fatal: sender rejected: 550 5.7.1 go away\n")
        self.assertEqual(len(result.connections), 2)
        self.assertTrue(all(conn.end in ("reset", None) for conn in result.connections),
                        [conn.end for conn in result.connections])
        report = json.loads(result.stdout)
        self.assertEqual((report["status"], report["sessions"], report["messages"]), (1, 2, 0))
        self.assertEqual(report["errors"]["rejected_mail"], 1)

    def waiting_group(self):
        """Our source with two processes, each with a session waiting for
        a HELO reply that never comes; (process, server, worker pids)."""
        server = FakeServer({"helo": SILENCE}).start(self)
        proc = subprocess.Popen(support.python_cmd(support.SOURCE, "--procs=2", "-s", "2",
                                                   "-m", "4", server.target),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.stdout.close)

        def kill():
            if proc.poll() is None:
                proc.kill()
                proc.wait(support.TIMEOUT)
        self.addCleanup(kill)

        def both_waiting():
            with server.lock:
                return sum(1 for conn in server.connections
                           if conn.commands() and conn.commands()[0].startswith(b"HELO")) == 2
        support.wait_until(both_waiting, what="two sessions at HELO")
        with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
            workers = [int(pid) for pid in f.read().split()]
        self.assertEqual(len(workers), 2)
        return proc, server, workers

    def assertAllGone(self, server, workers):
        for pid in workers:
            self.assertFalse(os.path.exists("/proc/%d" % pid), "worker %d is left" % pid)
        self.assertEqual(len(server.settle()), 2)     # both connections ended

    def test_sigterm_stops_every_process(self):
        proc, server, workers = self.waiting_group()
        proc.terminate()
        self.assertEqual(proc.wait(support.TIMEOUT), -signal.SIGTERM)
        self.assertAllGone(server, workers)
        self.assertEqual(proc.stderr.read(), b"")

    def test_a_worker_killed_stops_the_group_and_is_reported(self):
        proc, server, workers = self.waiting_group()
        os.kill(workers[1], signal.SIGKILL)
        self.assertEqual(proc.wait(support.TIMEOUT), 1)
        self.assertAllGone(server, workers)
        self.assertRegex(proc.stderr.read(),
                         rb"\Asmtp-source: warning: worker [01] \(pid %d\) died with signal 9\n\Z"
                         % workers[1])

    def test_bad_values(self):
        for value in ("0", "257", "x", "2x", ""):
            with self.subTest(value=value):
                result = run_tool(OURS, ["--procs=" + value, "127.0.0.1:1"])
                self.assertEqual(result.rc, 1)
                self.assertEqual(result.stderr,
                                 b"smtp-source: fatal: bad --procs value: %s\n" % value.encode())
                self.assertEqual(result.stdout, b"")


if __name__ == "__main__":
    unittest.main()
