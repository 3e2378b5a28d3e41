VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEBS   := wrk nginx-light haproxy etcd-server curl chromium  # chromium: the console's tests

.PHONY: install run test fuzz bench profile clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The example configuration, with a freshly generated secret for the consumer.
fastgw.yaml: | $(STAMP)
	sed "s|@SECRET@|$$($(VENV)/bin/fastgw secret)|" fastgw/demo/fastgw.yaml > $@

# The gateway on :9080 in front of the bundled demo upstream on :9081.
run: $(STAMP) fastgw.yaml
	@$(PY) -m fastgw.demo.upstream --port 9081 & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	FASTGW_CONFIG=fastgw.yaml FASTGW_WORKERS=$${FASTGW_WORKERS:-1} $(VENV)/bin/fastgw serve

# Debian packages the tests and the benchmark drive (installed only when missing).
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

test: $(STAMP) debs
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The differential fuzz of the gateway's edge with many more examples than `make test` runs:
# random, and what fails is shrunk to a minimal exchange. FASTGW_FUZZ_EXAMPLES=20000 for longer.
fuzz: $(STAMP)
	FASTGW_FUZZ_EXAMPLES=$${FASTGW_FUZZ_EXAMPLES:-2000} $(PY) -m pytest -q \
		tests/external/test_differential_fuzz.py $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

# wrk against fastgw and its peers; see bench/run.py. BENCH_ARGS="--duration 10 --rounds 5"
bench: $(BENCH_STAMP) debs
	$(PY) bench/run.py $(BENCH_ARGS)

# Where fastgw's CPU time per request goes, next to HAProxy's; see bench/cpu_profile.py.
profile: $(BENCH_STAMP) debs
	@command -v perf >/dev/null || (apt-get update -qq && apt-get install -y -qq linux-perf)
	$(PY) bench/cpu_profile.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
