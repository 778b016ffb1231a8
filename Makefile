# smtp-sink / smtp-source in Python.  "make test" is what CI runs.
PYTHON ?= python3

.PHONY: test clean

test:
	$(PYTHON) -m unittest discover -s tests -t . -v

clean:
	rm -rf dist build */__pycache__ __pycache__

# make demo: our smtp-source against our smtp-sink, with a counter and the rate.
.PHONY: demo
demo:
	$(PYTHON) bench/demo.py $(DEMO_ARGS)

# make bench: side by side with Postfix's C tools (needs Debian's postfix);
# BENCH_ARGS="--pairs 5" or "--scale 0.2 --only reuse" to vary it.
.PHONY: bench
bench:
	$(PYTHON) bench/bench.py $(BENCH_ARGS)

# ---------------------------------------------------------------- packaging
# make dist: dist/smtp-sink.pyz and dist/smtp-source.pyz, self-contained
# zipapps ("python3 dist/smtp-sink.pyz ..." or "./dist/smtp-sink.pyz ...").
# make install / uninstall PREFIX=/usr/local DESTDIR=/tmp/stage
#
# Layout: the commands in BINDIR are small launchers (tools/launcher.py);
# the scripts and smtpcore/ live in a private PKGLIBDIR, not in
# site-packages: nothing else should import them, the installed files stay
# plain, readable .py (as distributions want), and no Python version's
# site-packages path gets baked in.  A launcher finds PKGLIBDIR relative to
# its own directory, so the staged DESTDIR tree runs as it is (the tests
# do that) and a moved PREFIX still works.  uninstall removes our files and
# PKGLIBDIR, and leaves the shared directories (bin, man1) in place.
DIST ?= dist
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
PKGLIBDIR ?= $(PREFIX)/lib/smtp-sink-source
MANDIR ?= $(PREFIX)/share/man
MAN1DIR ?= $(MANDIR)/man1
SHEBANG ?= /usr/bin/env python3
INSTALL_ARGS = --destdir "$(DESTDIR)" --bindir "$(BINDIR)" --pkglibdir "$(PKGLIBDIR)" \
	--man1dir "$(MAN1DIR)" --shebang "$(SHEBANG)"

.PHONY: dist install uninstall vermin
dist:
	$(PYTHON) tools/package.py dist --dist "$(DIST)"

install:
	$(PYTHON) tools/package.py install $(INSTALL_ARGS)

uninstall:
	$(PYTHON) tools/package.py uninstall $(INSTALL_ARGS)

# make vermin: fail if any shipped file needs a Python newer than 3.8.
# vermin is a development tool only: .ci/run installs it into .venv-dev/.
VERMIN ?= .venv-dev/bin/vermin
vermin:
	$(VERMIN) --no-config-file --no-tips --violations -t=3.8- \
		smtp_sink.py smtp_source.py smtpcore tools
