"""Start one of the tools as the main program; the template of the commands.

tools/package.py copies this file, with MODULE and LIBDIR filled in, to
two places:

    the __main__.py of dist/smtp-sink.pyz (LIBDIR None: the archive itself
    is already the first entry of sys.path), and

    the installed command $(BINDIR)/smtp-sink (LIBDIR the private library
    directory, relative to the directory of the command, so that a staged
    DESTDIR tree and a moved PREFIX work as they are).

The tool's own `if __name__ == "__main__":` block does the rest, so the
commands start exactly like "python3 smtp_sink.py".  Nothing here may need
a Python newer than 3.8.
"""

import os
import runpy
import shutil
import sys

MODULE = None       # "smtp_sink" or "smtp_source"
LIBDIR = None       # None, or where MODULE and smtpcore/ are


def typed_name(argv0):
    """The command name as the user most likely typed it.

    Postfix's tools prefix their messages with argv[0] as given.  For a
    script, the kernel replaces argv[0] with the path it executed, so a
    command found on PATH arrives as "/usr/local/bin/smtp-sink".  When that
    path is exactly the one a PATH search yields, the user (or a script)
    typed the bare name, and that is what we show.  (The one case this gets
    wrong: the full path typed although PATH leads there too.)
    """
    base = os.path.basename(argv0)
    if os.sep in argv0 and base and shutil.which(base) == argv0:
        return base
    return argv0


def launch():
    if LIBDIR is not None:
        here = os.path.dirname(os.path.realpath(__file__))
        # Replace the command's own directory (sys.path[0]): nothing else
        # that lies in bin/ should be importable.
        sys.path[0] = os.path.normpath(os.path.join(here, LIBDIR))
    sys.argv[0] = typed_name(sys.argv[0])
    # alter_sys=False keeps sys.argv[0]: diagnostics are named after it.
    runpy.run_module(MODULE, run_name="__main__")


if __name__ == "__main__":
    launch()
