# fhirstream developer tasks. Provisioning lives in scripts/ (see docs/provisioning.md):
# `scripts/env.sh MODE CMD...` makes sure NATS (>= 2.12, JetStream) and PostgreSQL
# are there, exports FHIRSTREAM_* variables and then runs CMD.

CARGO ?= cargo
ENV   := scripts/env.sh

# One cargo invocation for the whole test suite, so nothing is built twice.
ifneq ($(shell command -v cargo-nextest 2>/dev/null),)
TEST_CMD ?= $(CARGO) nextest run --workspace --no-fail-fast
else
TEST_CMD ?= $(CARGO) test --workspace --no-fail-fast
endif

.DEFAULT_GOAL := help
.PHONY: help run token test bench fmt lint clean-local fuzz soak sekmet

help:
	@echo "make run          provision NATS + PostgreSQL, then cargo run --release -- serve"
	@echo "make token        print a development token (TENANT=acme, SCOPE='system/*.* fhirstream/admin')"
	@echo "make test         provision PostgreSQL + a nats-server binary, drop stale test DBs, run tests, fuzz briefly"
	@echo "make bench        run scripts/bench.sh (when it exists)"
	@echo "make reliability  crash loop with 200 SIGKILLs, dependency faults, refused events (long form)"
	@echo "make fuzz         fuzz the request parsers, FUZZ_SECONDS per target (20; long form 600)"
	@echo "make soak         SOAK_MINUTES of mixed load on a release build, sampling the server's RSS"
	@echo "make sekmet       SEKMET conformance scenarios against a running server (make run first)"
	@echo "make fmt          cargo fmt --all"
	@echo "make lint         cargo clippy --workspace --all-targets -- -D warnings"
	@echo "make clean-local  stop project-local NATS/PostgreSQL and delete .local/"

run:
	$(ENV) run $(CARGO) run --release -- serve

TENANT ?= *
SCOPE  ?= system/*.* fhirstream/admin
token:
	@$(ENV) run $(CARGO) run --quiet --release -- token --tenant '$(TENANT)' --scope '$(SCOPE)'

# Tests spawn their own NATS servers from $FHIRSTREAM_TEST_NATS_SERVER and create
# databases through $FHIRSTREAM_PG_ADMIN_URL.
# The suite, then a brief fuzz of the request parsers (TEST_FUZZ_SECONDS per
# target; 0 skips it); `make fuzz` is the long form.
TEST_FUZZ_SECONDS ?= 10
test:
	$(ENV) test scripts/drop-test-dbs.sh
	$(ENV) test $(TEST_CMD)
	@if [ "$(TEST_FUZZ_SECONDS)" != "0" ]; then SECONDS_PER_TARGET=$(TEST_FUZZ_SECONDS) scripts/fuzz.sh; fi

bench:
	@if [ -f scripts/bench.sh ]; then $(ENV) all bash scripts/bench.sh; \
	else echo "bench: scripts/bench.sh does not exist yet"; fi

# Fuzzing needs cargo-fuzz (installed by the script); `make test` runs it
# briefly and replays the seeds and saved crashes in tests/fuzz_regressions.rs.
FUZZ_SECONDS ?= 20
fuzz:
	SECONDS_PER_TARGET=$(FUZZ_SECONDS) scripts/fuzz.sh

sekmet:
	$(ENV) run bash scripts/sekmet.sh

SOAK_MINUTES ?= 5
soak:
	$(ENV) all env SOAK_MINUTES=$(SOAK_MINUTES) bash scripts/soak.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-local:
	-scripts/ensure-nats.sh stop
	-scripts/ensure-postgres.sh stop
	rm -rf .local

# The long form of the reliability suite: the crash loop with 200 SIGKILLs
# (FHIRSTREAM_CRASH_KILLS overrides) and the dependency-fault tests.
.PHONY: reliability
reliability:
	$(ENV) test scripts/drop-test-dbs.sh
	$(ENV) test env FHIRSTREAM_CRASH_KILLS=$${FHIRSTREAM_CRASH_KILLS:-200} \
		$(CARGO) nextest run -p fhirstream --test crash_loop --test dependency_faults --test refused_events --no-capture
