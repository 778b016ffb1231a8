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
