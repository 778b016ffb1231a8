"""The boundary between a session and what drives it.

A session (of the sink or of the source) is an object whose generator,
`steps`, yields what it waits for:

    READABLE    its socket (session.fd) has input; it is sent back True,
                or False when session.deadline (time.monotonic(); None: no
                limit) passed first
    WRITABLE    its socket can take output (same deadline rule)
    PARKED      nothing: someone calls driver.wake(session) later
    a number    a pause of that many seconds
    None        nothing: carry on (after the others' turn)

The generator returns when the session is over.  A session touches no
thread, poller or timer itself, so the same session code runs under either
engine, chosen with --engine:

    threads     the default (smtpcore/threads.py): a thread per session,
                waiting on its own socket through a selectors selector.
                Simple to follow, one session's slow step never holds up
                another's, and a blocking call is harmless.
    loop        (smtpcore/loop.py): every session in one thread, on one
                event loop, as Postfix's tools are built.  No thread
                hand-overs of the interpreter lock, so it is the faster of
                the two in CPython (see the README's Benchmarks).

Both drivers have the same small interface:

    start(session)      run a session until it ends (in its own thread, or
                        up to its first wait on the loop)
    wake(session)       resume a PARKED session (from any thread)
    forget(fd)          stop watching fd; call it right before closing fd
    make_poller()       hold the descriptor Postfix's tools hold for their
                        poller, from now on (see make_poller)
    run()               until every started session has ended, or stop();
                        an exception a session raised comes out here
    stop()              end run() soon, from any thread or a signal
                        handler.  A thread's session is cut off at its next
                        wait (GeneratorExit there: its clean-up runs); the
                        loop leaves its sessions where they wait, for their
                        owner to close (steps.close())
    close()             release the driver (and wait for its threads)
    stopped             True once stop() was called

What sessions share (counters, budgets, queues, collectors) is never the
driver's business: it lives in one object of each tool, behind a real lock.
"""

READABLE = "readable"
WRITABLE = "writable"
PARKED = "parked"

ENGINES = ("threads", "loop")
DEFAULT_ENGINE = "threads"


class Waiter:
    """The attributes a driver reads of a session (a mix-in or a base)."""

    fd = -1             # the socket waited on
    deadline = None     # time.monotonic() limit of an I/O wait, or None
    timer_at = None     # (the loop's own bookkeeping)
    steps = None        # the generator


def new_driver(engine, wakeable=True, worker=None):
    """The driver of an engine ("threads" or "loop").  wakeable: stop() may
    come from another thread or a signal handler while sessions wait with
    no deadline; the driver then holds a pipe to wake them (smtp-source
    does without it, so that its descriptors are numbered as Postfix's).
    worker: the number of a --procs worker (the threads' CPU)."""
    if engine == "loop":
        return loop.Loop(wakeable=wakeable)
    return threads.ThreadDriver(wakeable=wakeable, worker=worker)


# Both drivers are imported now, not when first needed: smtp-sink makes its
# driver after chroot(2) (-R), where the files may be out of reach.  (They
# import the names above: hence at the end.)
from smtpcore import loop, threads  # noqa: E402
