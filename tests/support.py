"""Shared test helpers: paths, running the tools, peers, bounded waits.

Every wait here has a deadline; every process a test starts is stopped by
its PID in cleanup.  Tests that need Postfix's tools (or another peer) skip
with a loud message on stderr when it is missing.
"""

import errno
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINK = os.path.join(ROOT, "smtp_sink.py")
SOURCE = os.path.join(ROOT, "smtp_source.py")
POSTFIX_SINK = "/usr/sbin/smtp-sink"
POSTFIX_SOURCE = "/usr/sbin/smtp-source"
TIMEOUT = 20            # upper bound for any single wait in a test

IS_ROOT = os.geteuid() == 0
# Postfix's smtp-sink (and ours) refuse to run as root without -u.
PRIVS = ["-u", "nobody"] if IS_ROOT else []

_warned = set()


def loud_skip(what):
    """Skip a test because a peer is missing, and say so on stderr."""
    if what not in _warned:
        _warned.add(what)
        sys.stderr.write("\n*** SKIPPED: %s is not installed; tests that need it do "
                         "NOT run here (CI installs it) ***\n" % what)
    raise unittest.SkipTest("%s is not installed" % what)


def need_postfix(test=None):
    if not (os.access(POSTFIX_SINK, os.X_OK) and os.access(POSTFIX_SOURCE, os.X_OK)):
        loud_skip("Postfix (smtp-sink/smtp-source)")


def need_program(name):
    path = shutil.which(name)
    if path is None:
        loud_skip(name)
    return path


# ------------------------------------------------------------------ engines
#
# Every test that runs sessions runs under both engines of our tools.  A
# test class that mixes in BothEngines runs as it is (the default engine,
# threads, with no option given, as users run the tools), and its twin
# <Name>Loop, made here, runs every test again with --engine=loop given to
# each run of our tools that goes through these helpers (tool_cmd,
# python_cmd, InProcessSink, engine_args for main() called in-process).

ENGINE = None           # the engine the test running now asks for (None: default)


def engine_args():
    """The option that selects the engine of the running test, if any."""
    return ["--engine=" + ENGINE] if ENGINE else []


class BothEngines:
    """Mix-in of a TestCase whose tests run sessions: see above."""

    engine = None       # None: the default engine

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.engine is None:
            twin = type(cls.__name__ + "Loop", (cls,), {
                "engine": "loop", "__module__": cls.__module__,
                "__qualname__": cls.__qualname__ + "Loop"})
            setattr(sys.modules[cls.__module__], twin.__name__, twin)

    def run(self, result=None):
        global ENGINE
        ENGINE = self.engine
        cpus = getattr(os, "sched_getaffinity", lambda pid: None)(0)
        try:
            return super().run(result)
        finally:
            ENGINE = None
            if cpus is not None:    # a tool's main() run here keeps the
                os.sched_setaffinity(0, cpus)   # thread to one CPU


def tool_cmd(script, *args):
    """argv for one of our tools (SINK, SOURCE) under the running test's
    engine."""
    return [sys.executable, script] + engine_args() + [os.fsdecode(a) for a in args]


def as_nobody(command):
    """command, run as user nobody (its user and group id, no other
    groups) by setpriv(1); skips loudly without setpriv."""
    import pwd
    setpriv = need_program("setpriv")
    nobody = pwd.getpwnam("nobody")
    return [setpriv, "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
            "--clear-groups"] + list(command)


def copy_checkout(top, also=()):
    """Copy the scripts, smtpcore/ and the directories named in `also`
    (as "tests") into the directory top."""
    for name in ("smtp_sink.py", "smtp_source.py"):
        shutil.copyfile(os.path.join(ROOT, name), os.path.join(top, name))
    for name in ("smtpcore",) + tuple(also):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(top, name),
                        ignore=shutil.ignore_patterns("__pycache__"))


def copy_for_nobody(test):
    """For a test that runs our scripts as nobody (not through -u, which
    opens them as root first): a copy of smtp_sink.py, smtp_source.py and
    smtpcore/ that nobody can read, since the checkout may be private (a
    clone under /root is mode 0700).  The copy is made in a fresh temporary
    directory, removed in cleanup; returns its path.  Skips loudly, naming
    the reason, when nobody cannot run the copy (TMPDIR or this Python out
    of nobody's reach)."""
    top = tempfile.mkdtemp(prefix="smtpcopy-")
    test.addCleanup(shutil.rmtree, top, True)
    copy_checkout(top)
    for directory, _, names in os.walk(top):
        os.chmod(directory, 0o755)
        for name in names:
            os.chmod(os.path.join(directory, name), 0o644)
    probe = run(as_nobody([sys.executable, "-c", "import smtp_sink, smtp_source"]), cwd=top)
    if probe.returncode != 0:
        reason = ("user nobody cannot run a copy of the scripts in %s with %s (%s)"
                  % (top, sys.executable, probe.stderr.decode(errors="replace").strip()[-300:]))
        sys.stderr.write("\n*** SKIPPED: %s; tests that run the scripts as nobody do NOT "
                         "run here ***\n" % reason)
        raise unittest.SkipTest(reason)
    return top


def python_cmd(script, *args):
    if script in (SINK, SOURCE):
        return tool_cmd(script, *args)
    return [sys.executable, script] + [os.fsdecode(a) for a in args]


def run(cmd, timeout=TIMEOUT, **kw):
    """Run a command to completion; returns CompletedProcess with bytes."""
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout, **kw)


def free_port(family=socket.AF_INET):
    """A TCP port for a server in a subprocess, which must be told its port
    (servers in the test process use port 0).  Free on every IPv4 and IPv6
    address, and reserved while the server starts, even under load with
    another test module running beside this one:

      * it lies below the range the kernel hands out by itself
        (ip_local_port_range), where binds to port 0 and the outgoing
        connections of the tests beside this one draw theirs;
      * it is held by sockets that bind it and never listen (the newest
        HELD_PORTS picks of this process), with SO_REUSEADDR set once
        bound: the server (ours and Postfix's set SO_REUSEADDR) binds it
        all the same, a connection to it is refused, and another test
        process's free_port() (which binds without it) is refused it.

    family: kept for callers that name one; the port is free on both."""
    low = kernel_ports_from()
    with _ports_lock:
        for _ in range(1000):
            holders = _hold(_ports_random.randrange(PICK_FROM, low)
                            if low > PICK_FROM + 1000 else 0)
            if holders:
                break
        else:
            raise AssertionError("no free TCP port below %d" % low)
        _held.append(holders)
        while len(_held) > HELD_PORTS:
            for sock in _held.pop(0):
                sock.close()
        return holders[0].getsockname()[1]


PICK_FROM = 10000           # free_port(): the lowest port it picks
HELD_PORTS = 16             # ... and how many of its picks stay held
_held = []                  # the holding sockets of those picks
_ports_lock = threading.Lock()
_ports_random = random.Random()


def kernel_ports_from():
    """The lowest port of those the kernel picks by itself."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def hold_port(test, port):
    """Hold port as free_port() holds its picks, until test's clean-up;
    False if it is in use."""
    holders = _hold(port)
    for sock in holders or ():
        test.addCleanup(sock.close)
    return bool(holders)


def _hold(port):
    """Sockets holding port (0: one the kernel picks) on every IPv4 and
    IPv6 address, or None if it is in use."""
    holders = []
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:                         # no IPv6 here
            continue
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except OSError as err:
            sock.close()
            if family == socket.AF_INET6 and err.errno in (errno.EADDRNOTAVAIL,
                                                           errno.EAFNOSUPPORT):
                continue                        # no IPv6 address here
            for other in holders:
                other.close()
            return None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holders.append(sock)
        port = sock.getsockname()[1]
    return holders


def wait_until(predicate, timeout=TIMEOUT, interval=0.01, what="condition"):
    """Poll predicate until it is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        event.wait(interval)


def listening(address, family):
    """True when something listens on address, read from /proc/net so that
    no probe connection disturbs the server's session counters."""
    if family == socket.AF_UNIX:
        with open("/proc/net/unix") as table:
            return any(line.split()[3] == "00010000" and line.rstrip("\n").endswith(" " + address)
                       for line in table if len(line.split()) >= 8)
    name = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    port = ":%04X" % address[1]
    with open(name) as table:
        return any(fields[1].endswith(port) and fields[3] == "0A"
                   for fields in (line.split() for line in table) if len(fields) > 3)


class Server:
    """A server process (ours or Postfix's) listening on a known endpoint.

    Usage: srv = Server(cmd, address, family); srv.start(test) registers the
    cleanup that stops it by PID.  Waits until it listens (without
    connecting: a probe would count as a session).
    """

    def __init__(self, cmd, address, family, env=None, probe=True):
        self.cmd, self.address, self.family = cmd, address, family
        self.env, self.probe = env, probe
        self.proc = None

    def start(self, test):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=self.env)
        test.addCleanup(self.stop)
        if self.probe:
            wait_until(lambda: self.proc.poll() is not None
                       or self._listening(), what="server %r" % self.cmd)
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError("server exited %s: %r" % (self.proc.returncode, err))
        return self

    def _listening(self):
        return listening(self.address, self.family)

    def stop(self):
        """Terminate (if still running); returns (rc, stdout, stderr)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=TIMEOUT)
        self.result = (self.proc.returncode, out, err)
        self.proc = None
        return self.result

    def wait(self, timeout=TIMEOUT):
        """Wait for the server to exit by itself; returns (rc, stdout, stderr)."""
        out, err = self.proc.communicate(timeout=timeout)
        self.result = (self.proc.returncode, out, err)
        self.proc = None
        return self.result


def temp_dir(test):
    """A temporary directory, removed in cleanup; world-writable so that a
    server running with -u nobody can write dumps and sockets there."""
    path = tempfile.mkdtemp(prefix="smtptest-")
    os.chmod(path, 0o777)
    test.addCleanup(shutil.rmtree, path, True)
    return path


def recv_until(sock, ending, timeout=TIMEOUT, limit=1 << 24):
    """Read from sock until the data ends with `ending` (or EOF); bounded."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(ending) and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock, timeout=TIMEOUT):
    """Read until the peer closes; bounded."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class Wait:
    """A conversation step: wait until the replies so far contain `marker`
    `count` times (so that what follows is sent after those replies)."""

    def __init__(self, marker, count=1):
        self.marker, self.count = marker, count


def connect(address, family, timeout=TIMEOUT):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def converse(address, family, steps, half_close=True, timeout=TIMEOUT):
    """Play a client: send each bytes step as its own write (a Wait step
    waits for replies), then half-close and collect everything the server
    sends until it closes.  Returns (replies, how) where how is "eof",
    "reset" or "timeout"."""
    sock = connect(address, family, timeout)
    received = bytearray()
    how = []
    cond = threading.Condition()

    def reader():
        result = "eof"
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                with cond:
                    received.extend(chunk)
                    cond.notify_all()
        except ConnectionResetError:
            result = "reset"
        except socket.timeout:
            result = "timeout"
        except OSError:
            result = "reset"
        with cond:
            how.append(result)
            cond.notify_all()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for step in steps:
            if isinstance(step, Wait):
                with cond:
                    ok = cond.wait_for(lambda: how or received.count(step.marker) >= step.count,
                                       timeout)
                if not ok:
                    raise AssertionError("no %r in %r" % (step.marker, bytes(received)))
                continue
            try:
                sock.sendall(step)
            except OSError:
                break               # the server hung up; keep what it said
        if half_close:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        thread.join(timeout + 5)
    finally:
        sock.close()
        thread.join(timeout + 5)
    return bytes(received), (how[0] if how else "timeout")


class InProcessSink:
    """Our sink served by a thread of the test process (no privilege
    changes, no root check: those are tested in subprocesses).

    args are smtp-sink options; the endpoint defaults to 127.0.0.1:0.
    .address/.family say where it listens, .stderr()/.stdout() what it
    printed, .status its exit status once it stopped by itself."""

    def __init__(self, test, args, endpoint="127.0.0.1:0", backlog="100"):
        import io
        sys.path.insert(0, ROOT) if ROOT not in sys.path else None
        import smtp_sink
        from smtpcore import endpoints, messages
        self._err = io.BytesIO()
        self.msg = messages.Messages("smtp-sink", stream=self._err)
        settings = smtp_sink.parse_options(engine_args() + list(args) + [endpoint, backlog],
                                           self.msg)
        self.msg.verbose = settings.verbose
        listener, kind = endpoints.listen(settings.endpoint, settings.backlog, self.msg,
                                          settings.family, settings.window)
        self._out = io.BytesIO()
        self.server = smtp_sink.new_server(settings, listener, self.msg, stdout=self._out)
        if kind == "unix":
            self.address, self.family = endpoint[5:], socket.AF_UNIX
        else:
            self.address, self.family = listener.getsockname()[:2], listener.family
        self.status = "running"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="sink")
        self.thread.start()
        test.addCleanup(self.stop)

    def _serve(self):
        try:
            self.status = self.server.serve_sessions()
        finally:
            self.server.server_close()
            self.done.set()

    def stop(self):
        if self.thread.is_alive():
            self.server.stop(None)
            self.thread.join(TIMEOUT)
            if self.thread.is_alive():
                raise AssertionError("sink thread did not stop")

    def wait(self, timeout=TIMEOUT):
        """Wait until the sink stops by itself (-M, -n); returns the status."""
        if not self.done.wait(timeout):
            raise AssertionError("sink did not stop by itself")
        self.thread.join(TIMEOUT)
        return self.status

    def converse(self, steps, **kw):
        return converse(self.address, self.family, steps, **kw)

    def stderr(self):
        return self._err.getvalue()

    def stdout(self):
        return self._out.getvalue()


_AIOSMTPD = []


def aiosmtpd_python():
    """A Python that can import aiosmtpd (a test peer, never a run-time
    dependency): $AIOSMTPD_PYTHON, or .venv-peers/ which .ci/run makes;
    None when neither can."""
    if not _AIOSMTPD:
        found = None
        for python in (os.environ.get("AIOSMTPD_PYTHON"),
                       os.path.join(ROOT, ".venv-peers", "bin", "python")):
            if python and os.access(python, os.X_OK) and subprocess.run(
                    [python, "-c", "import aiosmtpd"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, timeout=TIMEOUT).returncode == 0:
                found = python
                break
        _AIOSMTPD.append(found)
    return _AIOSMTPD[0]


def make_cert(directory):
    """A throwaway self-signed certificate for localhost, 127.0.0.1 and ::1,
    made with the openssl command: (certificate path, key path), both PEM,
    in directory (made once, then reused).  Skips loudly without openssl."""
    openssl = need_program("openssl")
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    if not (os.path.exists(cert) and os.path.exists(key)):
        result = run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                      "-subj", "/CN=localhost", "-addext",
                      "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
                      "-keyout", key, "-out", cert])
        if result.returncode != 0:
            raise AssertionError("openssl could not make a certificate: %r" % result.stderr)
    return cert, key
