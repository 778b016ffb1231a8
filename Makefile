# smtp-sink / smtp-source in Python.  "make test" is what CI runs.
PYTHON ?= python3

.PHONY: test test-serial clean

# make test: the suite, JOBS modules at a time (tests/run.py; default 2);
# make test-serial: one process, one test after another.
JOBS ?= 2
test:
	$(PYTHON) -m tests.run -j $(JOBS)

test-serial:
	$(PYTHON) -m unittest discover -s tests -t . -v

clean:
	rm -rf dist build */__pycache__ __pycache__

# make demo: our smtp-source against our smtp-sink, with a counter and the rate.
.PHONY: demo
demo:
	$(PYTHON) bench/demo.py $(DEMO_ARGS)

# make cert: a throwaway self-signed certificate (for localhost, 127.0.0.1
# and ::1) to try smtp-sink --tls-cert/--tls-key with; the tests make their
# own (tests/support.py make_cert).  CERT_DIR=... to put it elsewhere.
CERT_DIR ?= build/cert
.PHONY: cert
cert:
	mkdir -p $(CERT_DIR)
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-days 30 -subj /CN=localhost \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
		-keyout $(CERT_DIR)/key.pem -out $(CERT_DIR)/cert.pem

# make bench: side by side with Postfix's C tools (needs Debian's postfix),
# and the extension rows (--report, --pipelining, sink and source --procs);
# BENCH_ARGS="--pairs 5" or "--scale 0.2 --only reuse,procs-sink" to vary it.
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

# make soak: 200 000 messages through our sink (-c; Postfix's smtp-source
# -d -s 20 when installed, else ours); fails if the sink's RSS at the end is
# more than 10 % above its RSS after the first 10 000.  Not part of "make
# test".  SOAK_ARGS="--messages 1000000" or "--source ours" to vary it.
.PHONY: soak
soak:
	$(PYTHON) bench/soak.py $(SOAK_ARGS)

# make fuzz: the seeded random tests of tests/test_fuzz.py with many more
# cases than "make test" runs (FUZZ_SEED=n for another seed).
FUZZ_CASES ?= 20000
.PHONY: fuzz
fuzz:
	FUZZ_CASES=$(FUZZ_CASES) $(PYTHON) -m unittest tests.test_fuzz -v
