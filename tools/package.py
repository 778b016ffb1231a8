"""Build the zipapps, install and uninstall; run by the Makefile.

    python3 tools/package.py dist [--dist DIR]
        DIR/smtp-sink.pyz and DIR/smtp-source.pyz (default DIR: dist), each
        a zipapp holding its script, smtpcore/ and a __main__.py made from
        tools/launcher.py, with a "#!/usr/bin/env python3" line.

    python3 tools/package.py install|uninstall --bindir B --pkglibdir L
                                               --man1dir M [--destdir D]
                                               [--shebang "/usr/bin/env python3"]
        D/B/smtp-sink and D/B/smtp-source: commands made from
        tools/launcher.py that find the scripts and smtpcore/ in L;
        D/M/smtp-sink.1 and D/M/smtp-source.1.  uninstall removes exactly
        these files, the __pycache__ directories Python may have written
        into L, and L itself; it leaves the shared directories B and M.

This file is the one list of what ships (SCRIPTS, PACKAGE, MAN_PAGES);
the tests import it to check the shipped files.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
import zipapp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "tools", "launcher.py")

# command name -> the module that is its main program
SCRIPTS = {"smtp-sink": "smtp_sink", "smtp-source": "smtp_source"}
PACKAGE = "smtpcore"
MAN_PAGES = ["man/smtp-sink.1", "man/smtp-source.1"]
DEFAULT_SHEBANG = "/usr/bin/env python3"


def package_modules():
    """The package's files, relative to ROOT: every smtpcore/*.py."""
    names = sorted(n for n in os.listdir(os.path.join(ROOT, PACKAGE)) if n.endswith(".py"))
    return [PACKAGE + "/" + name for name in names]


def shipped_python_files():
    """Every Python file that ships, relative to ROOT (the launcher too)."""
    return ([module + ".py" for module in SCRIPTS.values()] + package_modules()
            + ["tools/launcher.py"])


def launcher_text(module, libdir):
    """tools/launcher.py with MODULE and LIBDIR filled in."""
    with open(LAUNCHER, encoding="utf-8") as f:
        text = f.read()
    for name, value in (("MODULE", module), ("LIBDIR", libdir)):
        text, count = re.subn(r"^%s = None\b.*$" % name,
                              lambda m: "%s = %r" % (name, value), text, flags=re.M)
        if count != 1:
            raise SystemExit("tools/launcher.py: no single '%s = None' line" % name)
    return text


def write_file(path, data, mode):
    """Write path atomically (a temporary file, then rename) with mode."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def copy_file(source, target, mode):
    with open(source, "rb") as f:
        write_file(target, f.read(), mode)


# ---------------------------------------------------------------------- dist

def build_zipapp(command, dist):
    """dist/<command>.pyz: the script, smtpcore/ and __main__.py."""
    module = SCRIPTS[command]
    target = os.path.join(dist, command + ".pyz")
    with tempfile.TemporaryDirectory(prefix="zipapp-") as staging:
        os.mkdir(os.path.join(staging, PACKAGE))
        for name in [module + ".py"] + package_modules():
            shutil.copyfile(os.path.join(ROOT, name), os.path.join(staging, name))
        with open(os.path.join(staging, "__main__.py"), "w", encoding="utf-8") as f:
            f.write(launcher_text(module, None))
        zipapp.create_archive(staging, target + ".tmp", interpreter=DEFAULT_SHEBANG,
                              compressed=True)
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
    return target


def dist(args):
    os.makedirs(args.dist, exist_ok=True)
    for command in SCRIPTS:
        print("built", build_zipapp(command, args.dist))


# ---------------------------------------------------------------- install

def installed_files(args):
    """(source or None, target, mode) for every file we install, targets
    under DESTDIR; a None source is a command made from the launcher."""
    staged = lambda path: args.destdir + path   # as make does: $(DESTDIR)$(BINDIR)
    files = []
    for command, module in SCRIPTS.items():
        files.append((None, staged(os.path.join(args.bindir, command)), 0o755))
        files.append((module + ".py", staged(os.path.join(args.pkglibdir, module + ".py")), 0o644))
    for name in package_modules():
        files.append((name, staged(os.path.join(args.pkglibdir, name)), 0o644))
    for page in MAN_PAGES:
        files.append((page, staged(os.path.join(args.man1dir, os.path.basename(page))), 0o644))
    return files


def install(args):
    # The commands find the library relative to themselves (see launcher.py).
    libdir = os.path.relpath(args.pkglibdir, args.bindir)
    for directory in (args.bindir, args.man1dir, args.pkglibdir,
                      os.path.join(args.pkglibdir, PACKAGE)):
        os.makedirs(args.destdir + directory, mode=0o755, exist_ok=True)
    commands = {os.path.join(args.bindir, c): m for c, m in SCRIPTS.items()}
    for source, target, mode in installed_files(args):
        if source is None:
            module = commands[target[len(args.destdir):]]
            text = "#!%s\n%s" % (args.shebang, launcher_text(module, libdir))
            write_file(target, text.encode("utf-8"), mode)
        else:
            copy_file(os.path.join(ROOT, source), target, mode)
        print("installed", target)


def uninstall(args):
    for _, target, _ in installed_files(args):
        if os.path.lexists(target):
            os.remove(target)
            print("removed", target)
    # Our private directory: what Python cached there, then the directories
    # (only if empty: anything else in them is not ours to delete).
    pkglib = args.destdir + args.pkglibdir
    for directory in (os.path.join(pkglib, PACKAGE), pkglib):
        shutil.rmtree(os.path.join(directory, "__pycache__"), ignore_errors=True)
        try:
            os.rmdir(directory)
            print("removed", directory)
        except FileNotFoundError:
            pass
        except OSError as err:
            print("%s: not removed: %s" % (directory, err.strerror), file=sys.stderr)


# ---------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action")
    sub.required = True
    p = sub.add_parser("dist", help="build the zipapps")
    p.add_argument("--dist", default=os.path.join(ROOT, "dist"))
    p.set_defaults(run=dist)
    for name, run in (("install", install), ("uninstall", uninstall)):
        p = sub.add_parser(name)
        p.add_argument("--destdir", default="")
        p.add_argument("--bindir", required=True)
        p.add_argument("--pkglibdir", required=True)
        p.add_argument("--man1dir", required=True)
        p.add_argument("--shebang", default=DEFAULT_SHEBANG)
        p.set_defaults(run=run)
    args = parser.parse_args(argv)
    if args.action != "dist":
        for name in ("bindir", "pkglibdir", "man1dir"):
            if not os.path.isabs(getattr(args, name)):
                parser.error("--%s must be an absolute path" % name)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
