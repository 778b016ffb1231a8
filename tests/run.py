"""Run the whole test suite, a few modules at a time (what "make test" does).

    python3 -m tests.run [-j N] [module ...]

The suite spends most of its time waiting -- for processes to start and
stop, for the delays and timeouts under test, for peers -- so running
several modules at once (N processes of "python3 -m unittest -v MODULE",
default 2; JOBS=N in the environment too) takes far less time than one
after another, and loads the machine as the suite must bear anyway (it is
meant to pass beside two CPU-bound processes).  A module is the unit: its
tests share fixtures (the syslog socket, a certificate) that other
processes must not share.  The slowest modules go first, so that the last
one to end is a short one.

Each module's output is printed whole, in the order they end, then a
summary; the exit status is 1 when any test failed, errored, or a module
did not run to its end.  Not a test module itself.
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Seconds each module took, about (one run, both engines): the order in
# which modules start.  A module not listed counts as short.
SECONDS = {
    "test_source_differential": 120, "test_source_misbehaving": 85, "test_sink_cli": 80,
    "test_source_session": 55, "test_sink_hostile": 50, "test_source_modern": 50,
    "test_source_cli": 40, "test_sink_timing": 40, "test_sink_privileges": 30,
    "test_sink_differential": 30, "test_source_report": 30, "test_fuzz": 25,
    "test_source_errors": 25, "test_interop_matrix": 20, "test_interop_servers": 15,
}
RAN = re.compile(rb"^Ran (\d+) tests? in ", re.M)
RESULT = re.compile(rb"^(OK|FAILED)(?: \(([^)]*)\))?\s*$", re.M)


def modules():
    names = sorted(name[:-3] for name in os.listdir(HERE)
                   if name.startswith("test_") and name.endswith(".py"))
    return sorted(names, key=lambda name: -SECONDS.get(name, 1))


def run_module(name, results, lock):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "unittest", "-v", "tests." + name],
                          cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    with lock:
        sys.stdout.buffer.write(b"\n==== tests.%s (%.1f s, exit %d)\n" % (
            name.encode(), elapsed, proc.returncode))
        sys.stdout.buffer.write(proc.stdout)
        sys.stdout.flush()
        results[name] = (proc.returncode, proc.stdout, elapsed)


def summary(results):
    """(tests run, {"failures": n, ...}, modules that did not end well)."""
    ran, counts, bad = 0, {}, []
    for name, (status, output, _) in sorted(results.items()):
        found = RAN.findall(output)
        ran += int(found[-1]) if found else 0
        outcome = RESULT.findall(output)
        if status != 0 or not outcome:
            bad.append(name)
        for verdict, details in outcome[-1:]:
            for item in filter(None, details.decode().split(", ")):
                key, _, value = item.partition("=")
                counts[key] = counts.get(key, 0) + int(value)
    return ran, counts, bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("JOBS", "2")))
    parser.add_argument("modules", nargs="*", help="test_xxx names (default: all)")
    args = parser.parse_args()
    pending = args.modules or modules()
    results, lock = {}, threading.Lock()
    started = time.monotonic()

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                name = pending.pop(0)
            run_module(name, results, lock)
    workers = [threading.Thread(target=worker) for _ in range(max(1, args.jobs))]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    ran, counts, bad = summary(results)
    details = ", ".join("%s=%d" % item for item in sorted(counts.items()))
    print("\n" + "=" * 70)
    print("Ran %d tests in %d modules in %.1f s (%d at a time)" % (
        ran, len(results), time.monotonic() - started, args.jobs))
    for name in bad:
        print("NOT OK: tests.%s (exit %d)" % (name, results[name][0]))
    print(("FAILED" if bad else "OK") + (" (%s)" % details if details else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
