"""Packaging (issue 7): the zipapps, make install/uninstall, the man pages,
and the Pythons we support (CPython 3.8 and newer).

Everything runs from temporary directories, with PYTHONPATH unset, so that
a packaged tool that still leaned on this source tree would fail here.
The zipapps are built by tools/package.py (as "make dist" does) into a
temporary directory; the install tests run "make install" with a
temporary DESTDIR and then the installed commands themselves.
"""

import ast
import glob
import importlib.util
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import unittest
import zipfile

import smtp_sink
import smtp_source
from tests import support
from tests.support import Wait


def load_packaging_tool():
    """tools/package.py, by its path: "tools" is no package of ours."""
    path = os.path.join(support.ROOT, "tools", "package.py")
    spec = importlib.util.spec_from_file_location("smtp_packaging_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


package = load_packaging_tool()

SINK_USAGE = b"smtp-sink: fatal: usage: smtp-sink ["
SOURCE_USAGE = b"smtp-source: fatal: usage: smtp-source -cdLNov "

# Modules that CPython 3.12 and 3.13 removed (PEP 594, PEP 632, imp):
# a shipped file that imports one of them does not run on a current Python.
REMOVED_MODULES = {
    "asyncore", "asynchat", "smtpd", "imp", "distutils", "crypt", "telnetlib",
    "nntplib", "cgi", "cgitb", "pipes", "sndhdr", "spwd", "sunau", "uu", "xdrlib",
    "aifc", "audioop", "chunk", "mailcap", "msilib", "nis", "ossaudiodev",
}

# A whole SMTP transaction, pipelined as far as the sink allows.
SESSION = [Wait(b"220 "), b"EHLO client.example\r\n", Wait(b"250 "),
           b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
           Wait(b"354 "), b"Subject: packaged\r\n\r\nhello\r\n.\r\n", b"QUIT\r\n"]


def clean_env(**extra):
    """The environment for a packaged tool: no PYTHONPATH (nothing may
    come from this tree), bytecode writing as Python's default."""
    env = dict(os.environ, LC_ALL="C", **extra)
    for name in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONHOME"):
        env.pop(name, None)
    return env


def readable_temp_dir(test):
    """A temporary directory that user nobody (the sink's -u) can read."""
    path = tempfile.mkdtemp(prefix="smtppkg-")
    os.chmod(path, 0o755)
    test.addCleanup(shutil.rmtree, path, True)
    return path


def files_under(top):
    return sorted(os.path.relpath(os.path.join(d, f), top)
                  for d, _, names in os.walk(top) for f in names)


class SessionChecks:
    """Real sessions with packaged commands (mixed into the test classes)."""

    def check_sink_session(self, command):
        """command (a list) serves one SMTP session on a UNIX socket."""
        directory = support.temp_dir(self)
        path = os.path.join(directory, "sink.sock")
        server = support.Server(command + support.PRIVS + ["-h", "testhost", "unix:" + path, "5"],
                                path, socket.AF_UNIX, env=clean_env()).start(self)
        replies, how = support.converse(path, socket.AF_UNIX, SESSION)
        self.assertTrue(replies.startswith(b"220 testhost ESMTP"), replies)
        self.assertIn(b"\r\n354 ", b"\r\n" + replies)
        self.assertTrue(replies.endswith(b"250 2.0.0 Ok\r\n221 Bye\r\n"), replies)
        _, _, stderr = server.stop()
        self.assertEqual(stderr, b"")

    def check_source_session(self, command):
        """command (a list) sends three messages to our sink (in-process)."""
        sink = support.InProcessSink(self, ["-c"])
        host, port = sink.address
        result = support.run(command + ["-m", "3", "-s", "2", "-M", "testhost",
                                        "%s:%d" % (host, port)],
                             env=clean_env(), cwd=readable_temp_dir(self))
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        support.wait_until(lambda: b"mesg=3" in sink.stdout(), what="mesg=3 from the sink")


# ------------------------------------------------------------------ zipapps

class ZipappTests(SessionChecks, unittest.TestCase):
    """dist/smtp-sink.pyz and dist/smtp-source.pyz, built into a temp dir."""

    @classmethod
    def setUpClass(cls):
        cls.dist = tempfile.mkdtemp(prefix="smtpdist-")
        os.chmod(cls.dist, 0o755)
        result = support.run([sys.executable, os.path.join(support.ROOT, "tools", "package.py"),
                              "dist", "--dist", cls.dist], env=clean_env())
        if result.returncode != 0:
            shutil.rmtree(cls.dist, True)
            raise AssertionError("building the zipapps failed: %r" % result.stderr)
        cls.sink = os.path.join(cls.dist, "smtp-sink.pyz")
        cls.source = os.path.join(cls.dist, "smtp-source.pyz")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dist, True)

    def test_self_contained(self):
        modules = sorted(os.path.basename(m) for m in package.package_modules())
        for pyz, script in ((self.sink, "smtp_sink.py"), (self.source, "smtp_source.py")):
            with zipfile.ZipFile(pyz) as archive:
                names = sorted(n for n in archive.namelist() if not n.endswith("/"))
            self.assertEqual(names, sorted(["__main__.py", script]
                                           + ["smtpcore/" + m for m in modules]))

    def test_usage_error_from_another_directory(self):
        cwd = readable_temp_dir(self)
        for pyz, usage in ((self.sink, SINK_USAGE), (self.source, SOURCE_USAGE)):
            result = support.run([sys.executable, pyz], env=clean_env(), cwd=cwd)
            self.assertEqual(result.returncode, 1)
            self.assertTrue(result.stderr.startswith(usage), result.stderr)
            self.assertEqual(result.stdout, b"")

    def test_runs_as_a_command(self):
        for pyz, usage in ((self.sink, SINK_USAGE), (self.source, SOURCE_USAGE)):
            with open(pyz, "rb") as f:
                self.assertEqual(f.readline(), b"#!/usr/bin/env python3\n")
            self.assertTrue(os.stat(pyz).st_mode & stat.S_IXUSR)
            result = support.run(["./" + os.path.basename(pyz), "-v"],
                                 env=clean_env(), cwd=self.dist)
            self.assertEqual(result.returncode, 1)
            self.assertTrue(result.stderr.startswith(usage), result.stderr)

    def test_sink_serves_a_session(self):
        self.check_sink_session([sys.executable, self.sink])

    def test_source_sends_mail(self):
        self.check_source_session([sys.executable, self.source])


# ------------------------------------------------------------------ install

def make(target, destdir, python=sys.executable):
    """make <target> DESTDIR=destdir PREFIX=/usr/local, from the source tree."""
    result = support.run(["make", "-s", "-C", support.ROOT, target, "DESTDIR=" + destdir,
                          "PREFIX=/usr/local", "PYTHON=" + python], env=clean_env())
    if result.returncode != 0:
        raise AssertionError("make %s failed: %r" % (target, result.stderr))
    return result


def need_make():
    support.need_program("make")


class InstallTests(SessionChecks, unittest.TestCase):
    """make install DESTDIR=<tmp> PREFIX=/usr/local, and what it installed."""

    @classmethod
    def setUpClass(cls):
        need_make()
        cls.destdir = tempfile.mkdtemp(prefix="smtpinst-")
        os.chmod(cls.destdir, 0o755)
        try:
            make("install", cls.destdir)
        except BaseException:
            shutil.rmtree(cls.destdir, True)
            raise
        cls.bindir = os.path.join(cls.destdir, "usr/local/bin")
        cls.man1dir = os.path.join(cls.destdir, "usr/local/share/man/man1")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.destdir, True)

    def command(self, name):
        return os.path.join(self.bindir, name)

    def test_layout(self):
        lib = "usr/local/lib/smtp-sink-source/"
        expected = (["usr/local/bin/smtp-sink", "usr/local/bin/smtp-source",
                     lib + "smtp_sink.py", lib + "smtp_source.py",
                     "usr/local/share/man/man1/smtp-sink.1",
                     "usr/local/share/man/man1/smtp-source.1"]
                    + [lib + m for m in package.package_modules()])
        self.assertEqual([f for f in files_under(self.destdir) if "__pycache__" not in f],
                         sorted(expected))
        for name in expected:
            mode = stat.S_IMODE(os.stat(os.path.join(self.destdir, name)).st_mode)
            self.assertEqual(mode, 0o755 if "/bin/" in name else 0o644, name)

    def test_usage_by_full_path(self):
        # As Postfix's tools: the messages carry argv[0] as typed.
        for name in ("smtp-sink", "smtp-source"):
            path = self.command(name).encode()
            result = support.run([path], env=clean_env(), cwd=readable_temp_dir(self))
            self.assertEqual(result.returncode, 1)
            self.assertTrue(result.stderr.startswith(path + b": fatal: usage: " + path + b" "),
                            result.stderr)

    def test_usage_found_on_path(self):
        env = clean_env(PATH=self.bindir + os.pathsep + os.environ.get("PATH", os.defpath))
        for name, usage in (("smtp-sink", SINK_USAGE), ("smtp-source", SOURCE_USAGE)):
            result = support.run([name, "-v"], env=env, cwd=readable_temp_dir(self))
            self.assertEqual(result.returncode, 1)
            self.assertTrue(result.stderr.startswith(usage), result.stderr)

    def test_installed_sink_serves_a_session(self):
        self.check_sink_session([self.command("smtp-sink")])

    def test_installed_source_sends_mail(self):
        self.check_source_session([self.command("smtp-source")])

    def test_man_pages_render(self):
        man = support.need_program("man")
        for page in ("smtp-sink.1", "smtp-source.1"):
            result = support.run([man, "-l", os.path.join(self.man1dir, page)],
                                 env=clean_env(MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
            self.assertEqual((result.returncode, result.stderr), (0, b""), page)
            text = result.stdout.decode("utf-8", "replace")
            for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXTENSIONS",
                            "DIFFERENCES FROM POSTFIX", "EXIT STATUS", "EXAMPLES"):
                self.assertIn("\n" + section + "\n", text, page)

    def test_man_pages_have_no_groff_warnings(self):
        groff = support.need_program("groff")
        for page in package.MAN_PAGES:
            result = support.run([groff, "-ww", "-man", "-z", os.path.join(support.ROOT, page)])
            self.assertEqual((result.returncode, result.stderr), (0, b""), page)

    def test_man_pages_document_every_option(self):
        # Each letter of the tool's getopt string has its own entry, .B for
        # a flag and .BI for an option with a value.
        for page, optstring in (("smtp-sink.1", smtp_sink.OPTSTRING),
                                ("smtp-source.1", smtp_source.OPTSTRING)):
            with open(os.path.join(self.man1dir, page)) as f:
                text = f.read()
            for i, letter in enumerate(optstring):
                if letter.isalnum():
                    macro = ".BI" if optstring[i + 1:i + 2] == ":" else ".B"
                    self.assertRegex(text, r"\n%s \\-%s\b" % (re.escape(macro), letter),
                                     "%s: -%s" % (page, letter))


class UninstallTests(unittest.TestCase):

    def test_uninstall_leaves_no_files(self):
        # Shared directories (bin, share/man/man1) stay; files and our
        # private library directory go, with what Python cached there.
        need_make()
        destdir = readable_temp_dir(self)
        make("install", destdir)
        sink = os.path.join(destdir, "usr/local/bin/smtp-sink")
        self.assertEqual(support.run([sink], env=clean_env()).returncode, 1)
        lib = os.path.join(destdir, "usr/local/lib/smtp-sink-source")
        self.assertTrue(os.path.isdir(os.path.join(lib, "smtpcore", "__pycache__")))
        make("uninstall", destdir)
        self.assertEqual(files_under(destdir), [])
        self.assertFalse(os.path.exists(lib))
        self.assertTrue(os.path.isdir(os.path.join(destdir, "usr/local/bin")))
        make("uninstall", destdir)        # a second time: nothing to do, no error


# ------------------------------------------------------------ Python versions

def find_python(version):
    """A working pythonX.Y (PATH first, then pyenv's versions), or None."""
    candidates = [shutil.which("python" + version)]
    roots = [os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv")]
    for root in filter(None, roots):
        candidates += sorted(glob.glob(os.path.join(root, "versions", version + ".*",
                                                    "bin", "python" + version)))
    for path in filter(None, candidates):
        try:
            result = support.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0 and result.stdout.strip() == version.encode():
            return path
    return None


def shipped_paths():
    return [os.path.join(support.ROOT, name) for name in package.shipped_python_files()]


class PythonVersionTests(unittest.TestCase):
    """CPython 3.8 is the oldest we support; vermin (make vermin, in CI)
    checks the same statically."""

    def test_no_module_removed_from_current_python(self):
        for path in shipped_paths():
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    self.assertNotIn(name.split(".")[0], REMOVED_MODULES,
                                     "%s imports %s" % (path, name))

    def check_python(self, python):
        """Compile every shipped file with python (no .pyc written) and see
        the tools start: scripts, zipapps, installed commands."""
        compile_all = ("import sys\n"
                       "for path in sys.argv[1:]:\n"
                       "    with open(path, 'rb') as f:\n"
                       "        compile(f.read(), path, 'exec', dont_inherit=True)\n")
        result = support.run([python, "-B", "-c", compile_all] + shipped_paths())
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        cwd = readable_temp_dir(self)
        for script, usage in (("smtp_sink.py", SINK_USAGE), ("smtp_source.py", SOURCE_USAGE)):
            result = support.run([python, "-B", os.path.join(support.ROOT, script)],
                                 env=clean_env(), cwd=cwd)
            self.assertEqual(result.returncode, 1, script)
            self.assertTrue(result.stderr.startswith(usage), result.stderr)
        # The generated entry points: a zipapp and an installed command.
        result = support.run([python, os.path.join(support.ROOT, "tools", "package.py"),
                              "dist", "--dist", cwd], env=clean_env())
        self.assertEqual(result.returncode, 0, result.stderr)
        result = support.run([python, os.path.join(cwd, "smtp-sink.pyz")], env=clean_env())
        self.assertTrue(result.stderr.startswith(SINK_USAGE), result.stderr)
        if shutil.which("make"):
            destdir = readable_temp_dir(self)
            make("install", destdir, python)
            command = os.path.join(destdir, "usr/local/bin/smtp-source")
            result = support.run([python, "-B", command], env=clean_env())
            self.assertTrue(result.stderr.startswith(command.encode() + b": fatal: usage: "),
                            result.stderr)

    def test_oldest_supported_python(self):
        python = find_python("3.8")
        if python is None:
            support.loud_skip("python3.8 (the oldest supported Python)")
        self.check_python(python)

    def test_newest_python(self):
        for version in ("3.14", "3.13"):
            python = find_python(version)
            if python is not None:
                return self.check_python(python)
        support.loud_skip("python3.13 or newer")
