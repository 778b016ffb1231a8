"""smtp-sink's command line and listening endpoints, against Postfix's.

Three kinds of test:

* a differential sweep: the same bad command line given to Postfix 3.7's
  /usr/sbin/smtp-sink and to `python3 smtp_sink.py`; exit status, stdout and
  stderr must be equal byte for byte.  Postfix is started with argv[0]
  "smtp-sink" (the name it would have when found through PATH), so that its
  diagnostics read "smtp-sink: fatal: ..." like ours and nothing needs
  normalising.  Postfix sleeps one second before a fatal exit and we do not
  (intended, see smtp_sink.py "DIFFERENCES FROM POSTFIX"), so the cases run
  in parallel.
* command lines that must start: both programs must reach a listening
  socket (seen in /proc, no probe connection) and bind the same addresses;
* the listening address forms (reference PART A2): what is bound, IPv4/IPv6
  separation, UNIX sockets, ports modulo 65536, SO_REUSEPORT, -T buffers.

Postfix must be installed for the differential parts (CI installs it);
without it those tests skip, loudly.  Nothing here sleeps to synchronise:
every wait polls with a deadline, every process is stopped by PID.
"""

import concurrent.futures
import errno
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import unittest

from smtpcore import endpoints, messages
from tests import support

USAGE = (b"usage: %s [-468acCeEFLpPv] [-A abort_delay] [-b soft_bounce_reply] "
         b"[-B hard_bounce_reply] [-d dump-template] [-D dump-template] [-f commands] "
         b"[-h hostname] [-m max_concurrency] [-M message_quit_count] [-n quit_count] "
         b"[-q commands] [-r commands] [-R root-dir] [-s commands] [-S start-string] "
         b"[-u user_privs] [-w delay] [host]:port backlog")
FATAL_USAGE = b"smtp-sink: fatal: " + USAGE % b"smtp-sink" + b"\n"

# The C library's texts must not be translated.
ENV = dict(os.environ, LC_ALL="C", LANG="C")
ENV.pop("LANGUAGE", None)

PRIVS = support.PRIVS
PARALLEL = 12           # processes run at once in a sweep (mostly asleep)
RUN_TIMEOUT = 30        # a command line that should fail must do so by then


# ------------------------------------------------------------------ helpers

class Outcome:
    """What a finished run showed: exit status, stdout, stderr."""

    def __init__(self, status, stdout, stderr):
        self.status, self.stdout, self.stderr = status, stdout, stderr

    def key(self):
        return (self.status, self.stdout, self.stderr)

    def __repr__(self):
        return "Outcome(%r, %r, %r)" % self.key()


def command(program, args):
    """(argv, executable) for Popen; program is "postfix" or "ours"."""
    if program == "postfix":
        return ["smtp-sink"] + list(args), support.POSTFIX_SINK
    return support.python_cmd(support.SINK, *args), None


class Processes:
    """The processes a test started: each one is killed by PID in cleanup."""

    def __init__(self, test):
        self.procs = []
        self.lock = threading.Lock()
        test.addCleanup(self.stop_all)

    def popen(self, program, args, env=ENV):
        argv, executable = command(program, args)
        proc = subprocess.Popen(argv, executable=executable, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        with self.lock:
            self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in self.procs:
            stop(proc)


def stop(proc):
    """Terminate proc by its PID (if still running); returns an Outcome."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=support.TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=support.TIMEOUT)
    except ValueError:              # already collected
        return None
    return Outcome(proc.returncode, out, err)


def run_to_end(procs, program, args):
    """Run a command line that should exit by itself; "still running"
    (after RUN_TIMEOUT seconds, then killed) when it did not."""
    proc = procs.popen(program, args)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        outcome = stop(proc)
        return Outcome("still running", outcome.stdout, outcome.stderr)
    return Outcome(proc.returncode, out, err)


def parallel(function, items):
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(function, items))


def _ipv4(text):
    return socket.inet_ntop(socket.AF_INET, bytes.fromhex(text)[::-1])


def _ipv6(text):
    raw = b"".join(bytes.fromhex(text[i:i + 8])[::-1] for i in range(0, 32, 8))
    return socket.inet_ntop(socket.AF_INET6, raw)


def listeners(pid):
    """The listening sockets of process pid, from /proc (no connection):
    a set of ("tcp", "127.0.0.1", port), ("tcp6", "::", port), ("unix", path)."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:                 # gone, or not ours to look at
        return set()
    found = set()
    for table, decode in (("tcp", _ipv4), ("tcp6", _ipv6)):
        with open("/proc/net/" + table) as lines:
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                    addr, port = fields[1].split(":")
                    found.add((table, decode(addr), int(port, 16)))
    with open("/proc/net/unix") as lines:
        for line in lines:
            fields = line.split()
            if len(fields) >= 8 and fields[3] == "00010000" and fields[6] in inodes:
                found.add(("unix", fields[7]))
    return found


def wait_listening(proc):
    """Wait until proc listens (returns its listeners) or exits (returns None)."""
    found = []

    def ready():
        if proc.poll() is not None:
            return True
        found[:] = [listeners(proc.pid)]
        return bool(found[0])

    support.wait_until(ready, what="pid %d to listen" % proc.pid)
    return found[0] if proc.poll() is None else None


# The system calls in which a sink waits for clients, by machine: a sink
# there has written all it says as it starts (-v: "chroot (none) user
# nobody" comes after the listening socket).
WAITING_CALLS = {
    "x86_64": {7, 23, 232, 270, 271, 281, 441},   # poll select epoll_wait pselect6
                                                  # ppoll epoll_pwait epoll_pwait2
    "aarch64": {22, 72, 73, 441},                 # epoll_pwait pselect6 ppoll epoll_pwait2
}


def wait_waiting(proc):
    """Wait until proc's main thread waits for clients (or proc ended).
    Where /proc/PID/syscall cannot tell (another machine, no permission),
    listening is all there is to wait for."""
    import platform
    calls = WAITING_CALLS.get(platform.machine())

    def waiting():
        try:
            with open("/proc/%d/syscall" % proc.pid) as f:
                call = f.read().split()[0]
        except (OSError, IndexError):
            return None
        return call.isdigit() and int(call) in calls
    if calls is None or waiting() is None:
        return
    support.wait_until(lambda: proc.poll() is not None or waiting(),
                       what="pid %d to wait for clients" % proc.pid)


def start(procs, program, args):
    """Start a sink that must listen; returns (listeners, Outcome after
    stop), stopped once it waits for clients."""
    proc = procs.popen(program, args)
    bound = wait_listening(proc)
    if bound is not None:
        wait_waiting(proc)
    return bound, stop(proc)


def held_port():
    """A socket holding a TCP port on all IPv4 addresses, without
    SO_REUSEPORT (the caller closes it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    sock.listen(1)
    return sock


def free_ports(count):
    """count distinct TCP ports, free on IPv4 and IPv6 (support.free_port)."""
    return sorted(support.free_port() for _ in range(count))


def port_is_free(port, host="0.0.0.0", family=socket.AF_INET):
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, port))
        return True
    except OSError:
        return False


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def refused(host, port, family):
    """True when nothing accepts a connection at (host, port)."""
    try:
        sock = support.connect((host, port), family, timeout=support.TIMEOUT)
    except ConnectionRefusedError:
        return True
    sock.close()
    return False


def refused_unix(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except ConnectionRefusedError:
            return True
        return False


def greeting(host, port, family):
    sock = support.connect((host, port), family)
    try:
        return support.recv_until(sock, b"\r\n")
    finally:
        sock.close()


def need_root():
    if not support.IS_ROOT:
        sys.stderr.write("\n*** SKIPPED: this test needs root; it does NOT run here "
                         "(CI runs as root) ***\n")
        raise unittest.SkipTest("needs root")


def expand(args, **values):
    return [arg.format(**values) for arg in args]


# ---------------------------------------------------------------- the cases

EP = "127.0.0.1:{port}"

# Each entry is a command line (with {port}, {held}, {dir} to fill in) that
# both programs must refuse with the same exit status and stderr.
USAGE_CASES = [
    [],                                         # no arguments
    PRIVS,
    PRIVS + [EP],                               # no backlog
    PRIVS + [EP, "abc"], PRIVS + [EP, "0"], PRIVS + [EP, "-5"], PRIVS + [EP, ""],
    PRIVS + [EP, "5", "extra"],                 # extra operand
    PRIVS + [EP, "5", "-v"],                    # option after the operands
    PRIVS + [EP, "5", "-d", "x"],
    [EP, "5", "-u", "nobody"],
    PRIVS + ["-u"],
    ["-Z"], PRIVS + ["-Z", EP, "5"], ["-vZ"], ["-Zv"], PRIVS + ["-c", "-x", "-m"],
    PRIVS + ["-m"], ["-v", "-m"], ["-W"], ["-vvm"],       # missing option argument
    ["--helpx"], ["--x"], ["---"], ["--"], ["-"], PRIVS + ["-", EP, "5"],
    PRIVS + ["-c-", EP, "5"], PRIVS + ["-vc--x", EP, "5"],
    PRIVS + ["-Z", "-m", "0"], PRIVS + ["-m", "0", "-Z"],  # the first problem wins
    PRIVS + ["-s", "foo", "-m", "0", EP, "5"], PRIVS + ["-m", "0", "-s", "foo", EP, "5"],
    PRIVS + ["-b", "250", "-B", "450", EP, "5"],
    PRIVS + ["-1", EP, "5"],
    # Postfix acts on each option as getopt hands it over: a bad value
    # before a bad option is what gets reported.
    PRIVS + ["-b", "250", "-Z"], PRIVS + ["-W", "foo:1", "-m"], PRIVS + ["-f", "foo", "-x"],
    PRIVS + ["-d", "x", "-D", "y", "-Z"], PRIVS + ["-m", "0", "--help"],
    PRIVS + ["-m", "0", EP, "5", "extra"],
    # glibc getopt without long options: "--x" is the option letter '-'.
    ["-c", "--x"], ["--=x"], PRIVS + ["--", "--", EP, "5"],
    # No abbreviations of our long options: to Postfix they are letters too.
    ["--he"], ["--chunk"], PRIVS + ["--proc=2", EP, "5"],
    # Clusters: letters before a bad one are flags; a value takes the rest.
    ["-cXm", "5"], PRIVS + ["-cm"], ["-:"], PRIVS + ["-c:", EP, "5"], ["-+"],
    PRIVS + ["-mabcX", "-Z"], PRIVS + ["-h", "", "-Z"], PRIVS + ["-h", "--help", EP, "0"],
    PRIVS + ["-c\u00e9", EP, "5"],                 # glibc names the first byte
]
# Postfix shows a byte that is not printable ASCII as '?' in its own
# diagnostics, but not in getopt's complaint or in the program name in front.
UNPRINTABLE = "\t\u00e9\udcff\x7f"
PRINTABLE_CASES = [
    PRIVS + [flag, "a" + UNPRINTABLE, EP, "5"] for flag in ("-m", "-t", "-q", "-W", "-b")] + [
    PRIVS + ["-W", "rcpt:" + UNPRINTABLE, EP, "5"], PRIVS + ["-m", "0", "-\u00e9"],
    PRIVS + ["-s", "a" + UNPRINTABLE, "-\udcff"], PRIVS + [UNPRINTABLE + ":25", "5"],
    PRIVS + ["unix:{dir}/nonexistent/" + UNPRINTABLE, "5"],
    ["-u", "a" + UNPRINTABLE, EP, "5"], ["-u", "nobody", "-R", UNPRINTABLE, EP, "5"],
]
NUMBER_CASES = [PRIVS + [flag, value, EP, "5"]
                for flag in ("-m", "-M", "-n", "-t", "-H", "-T", "-w")
                for value in ("abc", "0", "-1", "", "0x10", "-0", "x5")]
ABORT_CASES = [PRIVS + ["-A", value, EP, "5"]
               for value in ("abc", "5x", "", "-1", " 7", "+1", "0x1")]
BOUNCE_CASES = (
    [PRIVS + ["-b", value, EP, "5"]
     for value in ("250 ok", "4", "45", "4500 x", "4xx x", "", " 450 x", "550 x", "5")] +
    [PRIVS + ["-B", value, EP, "5"]
     for value in ("450 x", "", "5", "5xx x", "5000 x", "55 x", " 500 x", "250 ok")])
DELAY_CASES = [PRIVS + ["-W", value, EP, "5"]
               for value in ("rcpt", "rcpt:", ":1", "foo:1", "foo:0", "rcpt:0", "rcpt:abc",
                             "rcpt:-1", "rcpt:-1:", "rcpt:1:100", "rcpt:1:-1", "RCPT:1:101",
                             "rcpt:1:99999999999", "", ":", "::", "helo,foo", "foo",
                             "starttls:1", "Data")]
LIST_CASES = [PRIVS + [flag, value, EP, "5"]
              for flag in ("-f", "-q", "-Q", "-r", "-s")
              for value in ("foo", "helo,foo", "starttls", "..", "helo;mail", "FOO bar",
                            "mail from")]
DUMP_CASES = [
    PRIVS + ["-d", "x", "-D", "y", EP, "5"],
    PRIVS + ["-D", "y", "-d", "x", EP, "5"],
    PRIVS + ["-d", "x", "-D", "y", "127.0.0.1", "5"],     # before the endpoint
    PRIVS + ["-d", "x", "-D", "y"],                      # usage comes first
    ["-d", "x", "-D", "y", EP, "5"],                     # before the root check
]
ENDPOINT_CASES = [PRIVS + [endpoint, "5"] for endpoint in (
    "127.0.0.1", "127.0.0.1:abc", "127.0.0.1:-1", ":5x", "[127.0.0.1]", "localhost:",
    "[::1]", "foo:bar:3000", "unix:{dir}/nonexistent/x.sock", "nosuchhost.invalid:3002",
    "{dir}/x.sock", "[x", "[x]y", "[127.0.0.1]y", "[ipv6:127.0.0.1]:{port}", "inet:",
    "inet:127.0.0.1", "", ":", "abc", "0x10", "[]:{port}", "[::1:{port}", "a..b:{port}",
    "256.1.1.1:{port}", "1.2.3:{port}", "host name:{port}", "127.0.0.1:{port}:",
    "127.0.0.1:65536x", "unix:{dir}/" + "x" * 120, "[1::2::3]:{port}",
    "[fe80::1%lo]:{port}", "127.0.0.1:nosuchservice", "10.255.255.1:{port}",
    "[::2]:{port}", "127.0.0.1:{held}", ":{held}", "0.0.0.0:{held}", "inet::{held}",
    "unix:{dir}")] + [
    PRIVS + ["-6", EP, "5"], PRIVS + ["-4", "[::1]:{port}", "5"],
    PRIVS + ["-4", "::1:{port}", "5"], PRIVS + ["-6", "0.0.0.0:{port}", "5"],
    PRIVS + ["-4", "unix:{dir}/nonexistent/x.sock", "5"],
]
PRIVILEGE_CASES = [
    ["-u", "nosuchuser", EP, "5"],
    ["-u", "", EP, "5"],
    ["-u", "nosuchuser", "127.0.0.1", "5"],           # the endpoint comes first
    ["-u", "nosuchuser", "127.0.0.1:{held}", "5"],
    ["-u", "nobody", "-R", "/nonexistent", EP, "5"],
    ["-u", "nobody", "-R", "{dir}/file", EP, "5"],     # not a directory
    ["-u", "nobody", "-R", "/nonexistent", "127.0.0.1:{held}", "5"],
]
ROOT_CASES = [                                          # as root without -u
    [EP, "5"], ["-R", "/nonexistent", EP, "5"], ["127.0.0.1", "5"],
    ["-m", "0", EP, "5"], ["-v", EP, "5"],
]

# Command lines that both programs accept: each must come to listen.
START_CASES = (
    [PRIVS + [EP, " 7"], PRIVS + [EP, "5x"], PRIVS + [EP, "+3"],
     PRIVS + ["--", EP, "5"], PRIVS + ["-m5x", EP, "5"], PRIVS + ["-vvc", EP, "5"],
     PRIVS + ["-4", "-6", ":{port}", "5"], PRIVS + ["-6", "-4", ":{port}", "5"],
     PRIVS + ["-d", "{dir}/a.", "-d", "{dir}/b.", EP, "5"],
     PRIVS + ["-h", "", "-S", "", EP, "5"]] +
    [PRIVS + [flag, value, EP, "5"]
     for flag in ("-m", "-M", "-n", "-t", "-H", "-T", "-w")
     for value in ("5x", " 7", "+3", "99999999999")] +
    [PRIVS + ["-A", value, EP, "5"] for value in ("0", "7", "00")] +
    [PRIVS + ["-b", value, EP, "5"]
     for value in ("450 x", "450", "450x", "450-multi", "451 4.7.1 Try later", "450\t x")] +
    [PRIVS + ["-B", value, EP, "5"]
     for value in ("500x", "500", "550-multi", "550 5.1.1 no", "500\\r\\nfoo")] +
    [PRIVS + ["-W", value, EP, "5"]
     for value in ("rcpt::1", "rcpt:1:50:9", "rcpt:1.9", "rcpt:1:abc", "data:1:0",
                   "connect:1", ".:1", "::rcpt:1", "QUIT:1:99", "rcpt:4294967297")] +
    [PRIVS + [flag, value, EP, "5"]
     for flag in ("-f", "-q", "-Q", "-r", "-s")
     for value in ("", ",,helo,,", "Mail\tRCPT\nDATA\r")] +
    [PRIVS + ["-f", value, EP, "5"] for value in ("CONNECT", ".", "  ", ",")]
)
ROOT_START_CASES = [["-u", "root", EP, "5"], ["-u", "nobody", "-R", "/", EP, "5"]]


class SweepBase(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.procs = Processes(self)
        self.dir = support.temp_dir(self)
        with open(os.path.join(self.dir, "file"), "w"):
            pass
        self.port = free_ports(1)[0]
        held = held_port()
        self.addCleanup(held.close)
        self.held = held.getsockname()[1]

    def fill(self, args, port=None):
        return expand(args, port=port or self.port, held=self.held, dir=self.dir)

    def fill_one(self, text):
        return self.fill([text])[0]

    def sweep(self, cases):
        """Every case must fail the same way in both programs."""
        support.need_postfix()
        lines = [self.fill(case) for case in cases]
        jobs = [(program, args) for args in lines for program in ("postfix", "ours")]
        outcomes = parallel(lambda job: run_to_end(self.procs, *job), jobs)
        for i, args in enumerate(lines):
            theirs, ours = outcomes[2 * i], outcomes[2 * i + 1]
            with self.subTest(args=args):
                self.assertEqual(theirs.status, 1, "Postfix did not fail: %r" % theirs)
                self.assertNotIn(b"Traceback", ours.stderr)
                self.assertEqual(ours.key(), theirs.key())

    def starts(self, cases):
        """Every case must make both programs listen on the same addresses."""
        support.need_postfix()

        def both(case):
            # The port is taken just before the two start (both at once, on
            # it): a port found free long before may be another test's by then.
            args = self.fill(case, free_ports(1)[0])
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda program: start(self.procs, program, args),
                                        ("postfix", "ours")))
            return args, results
        with concurrent.futures.ThreadPoolExecutor(PARALLEL // 2) as pool:
            outcomes = list(pool.map(both, cases))      # PARALLEL programs at once
        for args, ((their_bound, theirs), (our_bound, ours)) in outcomes:
            with self.subTest(args=args):
                self.assertIsNotNone(their_bound, "Postfix did not start: %r" % theirs)
                self.assertIsNotNone(our_bound, "ours did not start: %r" % ours)
                self.assertEqual(our_bound, their_bound)
                self.assertEqual(ours.stderr, theirs.stderr)
                self.assertEqual(ours.stdout, theirs.stdout)


class UsageTest(SweepBase):
    """Usage errors: getopt's own complaints, missing or extra operands."""

    def test_usage_errors(self):
        self.sweep(USAGE_CASES)

    def test_unprintable_bytes(self):
        self.sweep(PRINTABLE_CASES)

    def test_usage_line(self):
        # The exact text, with the program name in both places.
        ours = run_to_end(self.procs, "ours", [])
        self.assertEqual(ours.key(), (1, b"", FATAL_USAGE))
        support.need_postfix()
        theirs = run_to_end(self.procs, "postfix", [])
        self.assertEqual(theirs.key(), (1, b"", FATAL_USAGE))

    def test_program_name_as_invoked(self):
        # Postfix prints argv[0] as given; so do we when installed as a
        # command (here a symlink), in front and inside the usage line.
        support.need_postfix()
        link = os.path.join(self.dir, "smtp-sink")
        os.symlink(support.SINK, link)
        ours = support.run(support.python_cmd(link), env=ENV)
        theirs = support.run([support.POSTFIX_SINK], env=ENV)
        path = support.POSTFIX_SINK.encode()
        self.assertEqual(theirs.stderr, b"%s: fatal: %s\n" % (path, USAGE % path))
        self.assertEqual(ours.stderr, theirs.stderr.replace(path, link.encode()))
        self.assertEqual(ours.returncode, theirs.returncode)
        # Inside the usage line, a name's unprintable bytes show as '?'.
        link = os.path.join(self.dir, "sink\u00e9")
        os.symlink(support.SINK, link)
        ours = support.run(support.python_cmd(link), env=ENV)
        theirs = support.run([link], env=ENV, executable=support.POSTFIX_SINK)
        self.assertIn(b"sink?? [", theirs.stderr)
        self.assertEqual((ours.returncode, ours.stderr), (theirs.returncode, theirs.stderr))

    def test_help(self):
        # Ours only (Postfix has no --help): the usage line, then our long
        # options one a line, on stdout; exit 0.  "--help=x" is refused.
        ours = run_to_end(self.procs, "ours", ["--help"])
        self.assertEqual((ours.status, ours.stderr), (0, b""))
        lines = ours.stdout.decode().splitlines()
        self.assertEqual(lines[0], (USAGE % b"smtp-sink").decode())
        names = [line.split()[0] for line in lines[1:]]
        self.assertEqual(sorted(name.split("=")[0] for name in names),
                         ["--chunking", "--engine", "--help", "--keep-pipelining", "--lmtp-replies",
                          "--maildir", "--procs", "--seed", "--stats", "--tls", "--tls-cert",
                          "--tls-key", "--verify"])
        self.assertTrue(all(len(line) <= 100 for line in lines[1:]))
        ours = run_to_end(self.procs, "ours", PRIVS + ["-c", "--help", "-Z"])
        self.assertEqual(ours.status, 0)            # acted on in getopt's order
        ours = run_to_end(self.procs, "ours", ["--help=x"])
        self.assertEqual(ours.key(), (1, b"", b"smtp-sink: option '--help' doesn't allow "
                                              b"an argument\n" + FATAL_USAGE))

    def test_unknown_long_options_stay_invalid(self):
        # As with Postfix's getopt(3): the letter '-', then the usage.
        for args in (["--helpx"], ["--HELP"], ["--verify-all"], PRIVS + ["--stat=1", EP, "5"]):
            ours = run_to_end(self.procs, "ours", args)
            self.assertEqual(ours.key(), (1, b"", b"smtp-sink: invalid option -- '-'\n"
                                                  + FATAL_USAGE), args)

    def test_getopt_complaints(self):
        # Not differential (the sweep is): the texts recorded in the reference.
        for args, first in ((["-Z"], b"smtp-sink: invalid option -- 'Z'\n"),
                            (PRIVS + ["-m"], b"smtp-sink: option requires an argument -- 'm'\n")):
            ours = run_to_end(self.procs, "ours", args)
            self.assertEqual(ours.key(), (1, b"", first + FATAL_USAGE))


class OptionValueTest(SweepBase):
    """Bad option values: numbers, -A, -b/-B, -W, command lists, -d with -D."""

    def test_numbers(self):
        self.sweep(NUMBER_CASES)

    def test_abort_delay(self):
        self.sweep(ABORT_CASES)

    def test_bounce_replies(self):
        self.sweep(BOUNCE_CASES)

    def test_command_delays(self):
        self.sweep(DELAY_CASES)

    def test_command_lists(self):
        self.sweep(LIST_CASES)

    def test_dump_templates(self):
        self.sweep(DUMP_CASES)

    def test_recorded_texts(self):
        # The reference's A1 table, for ours alone (runs without Postfix too).
        table = [
            (["-m", "abc"], b"fatal: bad concurrency limit: abc"),
            (["-M", "0"], b"fatal: bad message quit count: 0"),
            (["-n", "0x10"], b"fatal: bad quit count: 0x10"),
            (["-t", "-5"], b"fatal: bad timeout: -5"),
            (["-H", "abc"], b"fatal: bad data read delay: abc"),
            (["-T", "-1"], b"fatal: bad TCP window size: -1"),
            (["-W", "rcpt:"], b"fatal: invalid command delay argument: rcpt:"),
            (["-W", "rcpt:abc"], b"fatal: non-positive 'rcpt' delay"),
            (["-W", "rcpt:1:100"], b"fatal: delay odds for 'rcpt' out of range"),
            (["-f", "foo"], b"fatal: unknown command: foo"),
            (["-d", "X", "-D", "Y"], b"fatal: use only one of -d or -D, but not both"),
            (["-w", "0"], b"fatal: " + USAGE % b"smtp-sink"),
            (["-A", "5x"], b"fatal: " + USAGE % b"smtp-sink"),
            (["-b", "250 ok"], b"error: bad soft error reply: 250 ok\nsmtp-sink: fatal: "
             + USAGE % b"smtp-sink"),
            (["-B", "5000 x"], b"error: bad hard error reply: 5000 x\nsmtp-sink: fatal: "
             + USAGE % b"smtp-sink"),
        ]
        lines = [PRIVS + args + [self.fill_one(EP), "5"] for args, _ in table]
        outcomes = parallel(lambda args: run_to_end(self.procs, "ours", args), lines)
        for (args, text), outcome in zip(table, outcomes):
            with self.subTest(args=args):
                self.assertEqual(outcome.key(), (1, b"", b"smtp-sink: " + text + b"\n"))


class EndpointErrorTest(SweepBase):
    """Endpoints that cannot be listened on."""

    def test_endpoint_errors(self):
        self.sweep(ENDPOINT_CASES)

    def test_recorded_texts(self):
        table = [
            ("127.0.0.1:abc", b"127.0.0.1:abc: Servname not supported for ai_socktype"),
            ("127.0.0.1", b"127.0.0.1: garbage after numerical service"),
            ("[x", b'[x: missing "]"'),
            ("[x]y", b'[x]y: garbage after "]"'),
            ("10.255.255.1:{port}", b"bind 10.255.255.1 port {port}: Cannot assign requested address"),
            ("127.0.0.1:{held}", b"bind 127.0.0.1 port {held}: Address already in use"),
            (":{held}", b"bind 0.0.0.0 port {held}: Address already in use"),
            ("unix:{dir}/nonexistent-dir/x.sock",
             b"bind: {dir}/nonexistent-dir/x.sock: No such file or directory"),
        ]
        for endpoint, text in table:
            with self.subTest(endpoint=endpoint):
                outcome = run_to_end(self.procs, "ours", PRIVS + [self.fill_one(endpoint), "5"])
                want = b"smtp-sink: fatal: %s\n" % self.fill_one(text.decode()).encode()
                self.assertEqual(outcome.key(), (1, b"", want))


class PrivilegeErrorTest(SweepBase):
    """-u and -R problems, and root without -u (root only)."""

    def setUp(self):
        need_root()
        super().setUp()

    def test_privilege_errors(self):
        self.sweep(PRIVILEGE_CASES)

    def test_root_needs_u(self):
        ours = run_to_end(self.procs, "ours", [self.fill_one(EP), "5"])
        self.assertEqual(ours.key(), (1, b"", b"smtp-sink: fatal: -u option is required "
                                              b"if running as root\n"))
        self.sweep(ROOT_CASES)


class StartTest(SweepBase):
    """Odd but valid command lines: both programs start and listen alike."""

    def test_valid_command_lines_start(self):
        self.starts(START_CASES)

    def test_valid_privileges_start(self):
        need_root()
        self.starts(ROOT_START_CASES)


# ------------------------------------------------------ listening addresses

class FreePortTest(unittest.TestCase):
    """support.free_port(): the ports the tests give the servers they start
    are theirs until the server binds (another test module runs beside,
    connecting and binding all the while)."""

    def test_a_picked_port_is_held_for_its_server(self):
        port = support.free_port()
        self.assertLess(port, support.kernel_ports_from())     # no connect() lands there
        for family, host in [(socket.AF_INET, "0.0.0.0")] + (
                [(socket.AF_INET6, "::")] if have_ipv6() else []):
            with socket.socket(family, socket.SOCK_STREAM) as other:
                # another process's free_port() binds as this does
                with self.assertRaises(OSError) as caught:
                    other.bind((host, port))
                self.assertEqual(caught.exception.errno, errno.EADDRINUSE)
        self.assertNotEqual(support.free_port(), port)
        with socket.socket() as client:
            with self.assertRaises(ConnectionRefusedError):
                client.connect(("127.0.0.1", port))
        procs = Processes(self)
        proc = procs.popen("ours", PRIVS + ["127.0.0.1:%d" % port, "5"])
        self.assertEqual(wait_listening(proc), {("tcp", "127.0.0.1", port)})
        stop(proc)


class ListenTest(unittest.TestCase):
    """Reference A2: which socket each endpoint form binds, ours and Postfix's."""

    maxDiff = None

    def setUp(self):
        self.procs = Processes(self)
        self.dir = support.temp_dir(self)

    def listen(self, program, args):
        """Start program listening; returns (listeners, proc)."""
        proc = self.procs.popen(program, PRIVS + args)
        bound = wait_listening(proc)
        if bound is None:
            self.fail("%s %r did not start: %r" % (program, args, stop(proc)))
        return bound, proc

    def both(self, args, want):
        """Ours must bind want (a function of the port); Postfix (if
        installed) must bind the same."""
        port = free_ports(1)[0]
        args = expand(args, port=port, dir=self.dir)
        bound, proc = self.listen("ours", args)
        self.assertEqual(bound, want(port), args)
        outcome = stop(proc)
        self.assertEqual(outcome.stderr, b"")
        if os.access(support.POSTFIX_SINK, os.X_OK):
            theirs, proc = self.listen("postfix", args)
            stop(proc)
            self.assertEqual(theirs, bound, "Postfix differs for %r" % args)
        return port

    def test_ipv4_forms(self):
        def want(port):
            return {("tcp", "127.0.0.1", port)}
        for endpoint in ("127.0.0.1:{port}", "inet:127.0.0.1:{port}", "[127.0.0.1]:{port}",
                         "inet:[127.0.0.1]:{port}"):
            with self.subTest(endpoint=endpoint):
                self.both([endpoint, "5"], want)

    def test_localhost(self):
        # The first address getaddrinfo() gives (127.0.0.1 on the reference host).
        first = socket.getaddrinfo("localhost", 1, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
        table = "tcp6" if first[0] == socket.AF_INET6 else "tcp"
        self.both(["localhost:{port}", "5"], lambda port: {(table, first[4][0], port)})

    def test_any_address_is_ipv4_only(self):
        for args in ([":{port}", "5"], ["inet::{port}", "5"], ["0.0.0.0:{port}", "5"],
                     ["-4", ":{port}", "5"], ["{port}", "5"]):
            with self.subTest(args=args):
                self.both(args, lambda port: {("tcp", "0.0.0.0", port)})
        if have_ipv6():
            port = free_ports(1)[0]
            _, proc = self.listen("ours", [":%d" % port, "5"])
            self.assertTrue(refused("::1", port, socket.AF_INET6), "::1 clients must be refused")
            self.assertTrue(greeting("127.0.0.1", port, socket.AF_INET).startswith(b"220 "))
            stop(proc)

    def test_ipv6_any_is_ipv6_only(self):
        if not have_ipv6():
            raise unittest.SkipTest("no IPv6 here")
        for args in (["-6", ":{port}", "5"], ["[::]:{port}", "5"], ["-6", "inet::{port}", "5"]):
            with self.subTest(args=args):
                self.both(args, lambda port: {("tcp6", "::", port)})
        # v6only: an IPv4 client does not reach the IPv6 wildcard socket.
        port = free_ports(1)[0]
        _, proc = self.listen("ours", ["[::]:%d" % port, "5"])
        self.assertTrue(refused("127.0.0.1", port, socket.AF_INET),
                        "127.0.0.1 clients must be refused")
        self.assertTrue(greeting("::1", port, socket.AF_INET6).startswith(b"220 "))
        stop(proc)

    def test_ipv6_loopback_forms(self):
        if not have_ipv6():
            raise unittest.SkipTest("no IPv6 here")
        for endpoint in ("[::1]:{port}", "::1:{port}", "inet:[::1]:{port}", "[ipv6:::1]:{port}"):
            with self.subTest(endpoint=endpoint):
                self.both([endpoint, "5"], lambda port: {("tcp6", "::1", port)})

    def test_unix_socket(self):
        path = os.path.join(self.dir, "s1.sock")
        for args in (["unix:" + path, "5"], ["-4", "unix:" + path, "5"]):
            with self.subTest(args=args):
                self.both(args, lambda port: {("unix", path)})
                info = os.lstat(path)
                self.assertTrue(stat.S_ISSOCK(info.st_mode))
                self.assertEqual(stat.S_IMODE(info.st_mode), 0o666)
                self.assertEqual(info.st_uid, os.geteuid())     # made before -u
                os.unlink(path)
        # Ours serves on it.
        _, proc = self.listen("ours", ["unix:" + path, "5"])
        data, _ = support.converse(path, socket.AF_UNIX, [b"QUIT\r\n"])
        self.assertEqual(data, b"220 smtp-sink ESMTP\r\n221 Bye\r\n")
        # SIGTERM: no cleanup, the socket file stays (as with Postfix).
        stop(proc)
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))

    def test_stale_unix_socket_is_replaced(self):
        for program in ("ours", "postfix"):
            if program == "postfix" and not os.access(support.POSTFIX_SINK, os.X_OK):
                continue
            with self.subTest(program=program):
                path = os.path.join(self.dir, program + "-stale.sock")
                old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                old.bind(path)
                old.close()                 # the file stays, nobody listens
                self.assertTrue(refused_unix(path))
                bound, proc = self.listen(program, ["unix:" + path, "5"])
                self.assertEqual(bound, {("unix", path)})
                data, _ = support.converse(path, socket.AF_UNIX, [b"QUIT\r\n"])
                self.assertTrue(data.endswith(b"221 Bye\r\n"), data)
                self.assertEqual(stop(proc).stderr, b"")

    def test_regular_file_in_the_way_is_replaced(self):
        path = os.path.join(self.dir, "file.sock")
        with open(path, "w") as f:
            f.write("not a socket")
        bound, proc = self.listen("ours", ["unix:" + path, "5"])
        self.assertEqual(bound, {("unix", path)})
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
        stop(proc)

    def test_service_name(self):
        # A name from /etc/services; a non-privileged one when we can.
        for name in ("x11", "http-alt", "tproxy", "smtp"):
            try:
                port = socket.getservbyname(name, "tcp")
            except OSError:
                continue
            if port_is_free(port, "127.0.0.1") and (port >= 1024 or support.IS_ROOT):
                break
        else:
            raise unittest.SkipTest("no named service with a free port here")
        bound, proc = self.listen("ours", ["127.0.0.1:" + name, "5"])
        self.assertEqual(bound, {("tcp", "127.0.0.1", port)})
        stop(proc)
        if os.access(support.POSTFIX_SINK, os.X_OK):
            theirs, proc = self.listen("postfix", ["127.0.0.1:" + name, "5"])
            stop(proc)
            self.assertEqual(theirs, bound)

    def test_port_wraps_modulo_65536(self):
        if not support.hold_port(self, 34463):      # (in the kernel's own range)
            raise unittest.SkipTest("port 34463 is in use here")
        self.both([":99999", "5"], lambda port: {("tcp", "0.0.0.0", 34463)})
        self.both(["127.0.0.1:%d" % (65536 + 34463), "5"],
                  lambda port: {("tcp", "127.0.0.1", 34463)})

    def test_port_65536_is_any_port(self):
        for program in ("ours", "postfix"):
            if program == "postfix" and not os.access(support.POSTFIX_SINK, os.X_OK):
                continue
            with self.subTest(program=program):
                bound, proc = self.listen(program, ["127.0.0.1:65536", "5"])
                [(table, host, port)] = bound
                self.assertEqual((table, host), ("tcp", "127.0.0.1"))
                self.assertNotEqual(port, 0)
                stop(proc)

    def test_second_sink_on_the_same_port(self):
        # SO_REUSEPORT: a second sink (ours or Postfix's) starts beside the first.
        pairs = [("ours", "ours")]
        if os.access(support.POSTFIX_SINK, os.X_OK):
            pairs += [("postfix", "ours"), ("ours", "postfix")]
        for first, second in pairs:
            with self.subTest(first=first, second=second):
                port = free_ports(1)[0]
                args = ["127.0.0.1:%d" % port, "5"]
                bound1, proc1 = self.listen(first, args)
                bound2, proc2 = self.listen(second, args)
                self.assertEqual(bound1, bound2)
                self.assertEqual(bound1, {("tcp", "127.0.0.1", port)})
                self.assertEqual(stop(proc2).stderr, b"")
                self.assertEqual(stop(proc1).stderr, b"")

    def test_window_and_backlog_seen_by_ss(self):
        # -T sets SO_SNDBUF/SO_RCVBUF of the listener (Linux doubles them);
        # the backlog operand goes to listen().  ss shows both.
        ss = support.need_program("ss")
        programs = ["ours"]
        if os.access(support.POSTFIX_SINK, os.X_OK):
            programs.append("postfix")
        seen = {}
        for program in programs:
            port = free_ports(1)[0]
            _, proc = self.listen(program, ["-T", "4096", "127.0.0.1:%d" % port, "7"])
            out = support.run([ss, "-Hltnm", "sport = :%d" % port]).stdout.decode()
            stop(proc)
            backlog = re.search(r"LISTEN\s+\d+\s+(\d+)", out)
            rcv, snd = re.search(r"rb(\d+)", out), re.search(r"tb(\d+)", out)
            self.assertTrue(backlog and rcv and snd, out)
            seen[program] = (int(backlog.group(1)), int(rcv.group(1)), int(snd.group(1)))
        want = self.buffer_sizes(4096)
        self.assertEqual(seen["ours"], (7,) + want)
        if "postfix" in seen:
            self.assertEqual(seen["postfix"], seen["ours"])

    @staticmethod
    def buffer_sizes(size):
        """What the kernel reports after setting both buffers to size."""
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            return (s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                    s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


class ListenSocketOptionsTest(unittest.TestCase):
    """smtpcore.endpoints.listen() in-process: the options on the listener."""

    def open(self, endpoint, window=0, family=None):
        msg = messages.Messages("smtp-sink", stream=DevNull())
        sock, kind = endpoints.listen(endpoint, 7, msg, family, window)
        self.addCleanup(sock.close)
        return sock, kind

    def option(self, sock, level, name):
        return sock.getsockopt(level, name)

    def test_tcp_listener_options(self):
        sock, kind = self.open("127.0.0.1:0")
        self.assertEqual(kind, "inet")
        self.assertTrue(self.option(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR))
        self.assertTrue(self.option(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT))
        self.assertTrue(self.option(sock, socket.SOL_SOCKET, socket.SO_ACCEPTCONN))

    def test_window(self):
        sock, _ = self.open("127.0.0.1:0", window=4096)
        want = ListenTest.buffer_sizes(4096)
        self.assertEqual((self.option(sock, socket.SOL_SOCKET, socket.SO_RCVBUF),
                          self.option(sock, socket.SOL_SOCKET, socket.SO_SNDBUF)), want)
        # Accepted sockets inherit the listener's buffers.
        client = socket.create_connection(sock.getsockname(), timeout=support.TIMEOUT)
        self.addCleanup(client.close)
        sock.settimeout(support.TIMEOUT)
        conn, _ = sock.accept()
        self.addCleanup(conn.close)
        self.assertEqual((conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                          conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)), want)

    def test_no_window_keeps_the_defaults(self):
        sock, _ = self.open("127.0.0.1:0")
        with socket.socket() as plain:
            self.assertEqual(self.option(sock, socket.SOL_SOCKET, socket.SO_RCVBUF),
                             plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def test_ipv6_wildcard_is_v6only(self):
        if not have_ipv6():
            raise unittest.SkipTest("no IPv6 here")
        sock, _ = self.open("[::]:0")
        self.assertEqual(sock.family, socket.AF_INET6)
        self.assertTrue(self.option(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))

    def test_any_host_is_ipv4(self):
        sock, _ = self.open(":0")
        self.assertEqual(sock.family, socket.AF_INET)
        self.assertEqual(sock.getsockname()[0], "0.0.0.0")
        sock, _ = self.open(":0", family="6")
        self.assertEqual(sock.family, socket.AF_INET6)
        self.assertEqual(sock.getsockname()[0], "::")


class DevNull:
    def write(self, data):
        pass

    def flush(self):
        pass


if __name__ == "__main__":
    unittest.main()
