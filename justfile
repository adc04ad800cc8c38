# The everyday commands; `.ci/run` runs the same checks in CI.
# Install just with `cargo install just` or `apt-get install just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Type-check everything, benches included.
check:
    cargo check --workspace --all-targets

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# The test suite (the README's test command).
test:
    cargo test --workspace

# Every criterion benchmark, each next to its reference; see docs/performance.md.
bench *ARGS:
    cargo bench -p orchex-benches {{ARGS}}

# One benchmark target, quickly (e.g. `just bench-quick resilience`).
bench-quick NAME:
    cargo bench -p orchex-benches --bench {{NAME}} -- --warm-up-time 1 --measurement-time 3

# The monitor's benchmarks (watch setup, write-to-trigger latency, history).
bench-monitor:
    cargo bench -p orchex-benches --bench monitor_watch
    cargo bench -p orchex-benches --bench monitor_latency
    cargo bench -p orchex-benches --bench monitor_history

# The orchestrator's benchmarks (quick scales; drop the variables for full runs).
bench-orchestrator *ARGS:
    ORCHEX_BENCH_SCALE=0.1 cargo bench -p orchex-benches --bench orchestrator -- {{ARGS}}
    ORCHEX_BENCH_SIZE_JOBS=10000 cargo bench -p orchex-benches --bench orchestrator_size

# The dashboard's load harnesses: REST throughput next to a bare axum handler,
# WebSocket fan-out latency (1000 clients), idle clients' memory (10k clients).
# Each line raises the open-file limit first (the benches also setrlimit).
bench-dashboard:
    ulimit -n "$(ulimit -Hn)" && cargo bench -p orchex-benches --bench dashboard_rest
    ulimit -n "$(ulimit -Hn)" && cargo bench -p orchex-benches --bench dashboard_ws_fanout
    ulimit -n "$(ulimit -Hn)" && cargo bench -p orchex-benches --bench dashboard_ws_idle

# Fuzz the HTTP API with schemathesis (pinned in benches/fuzz-api) against
# a live daemon on loopback; fails on any 5xx or answer the OpenAPI document
# does not describe. Knobs (FUZZ_MAX_EXAMPLES, FUZZ_SEED, ...) in run.py.
fuzz-api:
    cargo build -p orchexd
    benches/fuzz-api/run.sh

# API docs, with warnings as errors.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Run the daemon on the shipped config (a demo repository when none is configured).
demo:
    cargo run --release -p orchexd -- --config config/orchex.toml

# Validate the shipped config and examples.
check-config:
    cargo run -q -p orchexd -- --check-config --config config/orchex.toml
    for f in config/examples/*; do cargo run -q -p orchexctl -- config validate "$f" -o table; done

# Everything CI does.
ci:
    .ci/run

# Property-driven fuzzing of the config loader, the webhook parser and the
# event query parameters, SECS seconds each (10 minutes by default).
fuzz SECS="600":
    ORCHEX_FUZZ_SECS={{SECS}} cargo test --release -p orchex-config --test fuzz -- --nocapture
    ORCHEX_FUZZ_SECS={{SECS}} cargo test --release -p orchex-dashboard --lib fuzz::event_query -- --nocapture
    ORCHEX_FUZZ_SECS={{SECS}} cargo test --release -p orchex-dashboard --lib fuzz::webhook -- --nocapture

# Fault injection: watcher overflow, a deleted repository, a corrupt ref, a
# full database, read-only storage, a step printing 1 GB, a step that never
# exits; each must be reported and survived (see docs/reliability.md).
faults *ARGS:
    cargo run -q -p orchex-reliability -- faults {{ARGS}}

# Crash loop: kill -9 orchexd at random moments, restart, check that no job is
# lost, nothing is half-delivered and the database is whole (docs/reliability.md).
crash-loop *ARGS:
    cargo run -q -p orchex-reliability -- crash-loop --trials 100 {{ARGS}}

# The crash loop's short run, as CI runs it.
crash-loop-ci *ARGS:
    cargo run -q -p orchex-reliability -- crash-loop --trials 20 {{ARGS}}

# Process hygiene: jobs whose forking, SIGTERM-ignoring steps time out or are
# cancelled; no process and no workspace may be left (docs/reliability.md).
hygiene *ARGS:
    cargo run -q -p orchex-reliability -- hygiene --jobs 1000 {{ARGS}}

# The process-hygiene short run, as CI runs it.
hygiene-ci *ARGS:
    cargo run -q -p orchex-reliability -- hygiene --jobs 100 {{ARGS}}

# Soak: the in-process stack for 10 minutes under 1000 API clients (a child
# process), 10k bus events/s and a stream of file changes; RSS drift < 10 %,
# no API error, every event persisted or counted as dropped (docs/reliability.md).
soak *ARGS:
    ulimit -n "$(ulimit -Hn)" && cargo run --release -q -p orchex-reliability -- soak {{ARGS}}

# The soak's short run: 60 s, 200 clients, 2000 events/s.
soak-short *ARGS:
    ulimit -n "$(ulimit -Hn)" && cargo run --release -q -p orchex-reliability -- soak --secs 60 --clients 200 --rate 2000 {{ARGS}}
