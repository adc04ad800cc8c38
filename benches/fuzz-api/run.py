#!/usr/bin/env python3
"""Fuzz orchexd's HTTP API with schemathesis against its own OpenAPI document.

Started by `just fuzz-api` (through run.sh, which sets up the pinned
virtualenv). It:

1. makes a temporary directory with two git repositories (git CLI) and a
   configuration: an admin and a read-only token, a webhook secret, the
   repository `api` (the other one, `web`, is there for POST
   /api/repositories to add) and three quick, harmless pipelines (no long
   sleeper: fuzzing triggers runs, and an emergency stop waits for running
   jobs);
2. starts `orchexd -c <config>` on a free loopback port
   (`ORCHEX_DASHBOARD__PORT`) and waits for `/api/health`;
3. seeds a few jobs through the API (succeeded, failed, dry run, skipped,
   rolled back) so lists and details carry real Job objects, not just `[]`;
4. runs `schemathesis run` with the admin token against
   `http://127.0.0.1:<port>/api/openapi.json`, checking for server errors,
   status codes, content types and response schemas, with bounded examples
   and a hard wall-clock limit (schemathesis.toml steers part of the values
   to real names and ids; hooks.py signs webhook deliveries);
5. stops the daemon with SIGTERM (SIGKILL after 30 s) and exits non-zero
   when schemathesis found anything, or when the daemon died or logged a
   panic.

Only loopback is touched. Environment knobs: ORCHEXD (binary, default
target/debug/orchexd), FUZZ_MAX_EXAMPLES (default 1000), FUZZ_WORKERS
(default 2), FUZZ_SEED, FUZZ_TIME_LIMIT (seconds, default 900),
FUZZ_KEEP=1 to keep the temporary directory, FUZZ_REPORT_DIR (default
target/fuzz-api/report), FUZZ_REPORTS (schemathesis report formats, default
junit; `har` records every request), FUZZ_CHECKS (default CHECKS below;
`all` adds schemathesis's stricter checks, which flag e.g. a refused
DELETE of a repository the pipelines name).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ADMIN = "fuzz-admin-token-0123456789"
READER = "fuzz-read-only-token-abcdef"
WEBHOOK_SECRET = "fuzz-webhook-secret"

# No 5xx, and every answer as the document says: a declared status, a
# declared content type, a body that matches the declared schema.
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"

# Operations left out of the run, each with its reason.
EXCLUDED = [
    # A WebSocket handshake (101 Switching Protocols) that schemathesis
    # cannot perform: every plain HTTP request to it is a failed handshake.
    # The WebSocket has its own tests (crates/dashboard/tests/dashboard/ws.rs).
    "/api/ws",
]


def log(message: str) -> None:
    print(f"fuzz-api: {message}", flush=True)


def git(repo: Path, *args: str) -> None:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="Fuzz",
        GIT_AUTHOR_EMAIL="fuzz@example.invalid",
        GIT_COMMITTER_NAME="Fuzz",
        GIT_COMMITTER_EMAIL="fuzz@example.invalid",
    )
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def make_repo(root: Path, name: str = "api") -> Path:
    repo = root / name
    (repo / "schema").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "schema" / "api.txt").write_text("v1\n")
    (repo / "README.md").write_text(f"# {name}\n\nA repository for API fuzzing.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def config_text(repo: Path) -> str:
    # Quick steps only: a fuzzed POST /api/jobs or webhook starts real runs.
    return f"""version = 2

[optimizer.schedule]
enabled = false

[optimizer.safety]
rateLimitPerHour = 100000

[orchestrator]
maxConcurrent = 2
adaptiveOptimization = false
healthCheckIntervalSecs = 5

[monitor.filesystem]
debounceMs = 100
maxWaitMs = 1000

[dashboard]
authToken = "{ADMIN}"
readOnlyToken = "{READER}"
webhookSecret = "{WEBHOOK_SECRET}"

[storage]
path = "data"

[[repositories]]
name = "api"
path = "{repo}"
branch = "main"

[[pipelines]]
name = "codegen"
repositories = ["api"]
triggers = ["fileChange", "commit", "push", "manual"]
paths = ["schema/**"]
deliver = "branch"

[[pipelines.steps]]
name = "generate"
run = ["sh", "-c", "mkdir -p generated && date +%s%N > generated/out.txt && echo generated"]

[[pipelines]]
name = "failing"
repositories = ["api"]
triggers = ["manual"]

[[pipelines.steps]]
name = "break"
run = ["sh", "-c", "echo broken >&2; exit 3"]

[[pipelines]]
name = "brief"
repositories = ["api"]
triggers = ["manual"]
deliver = "none"

[[pipelines.steps]]
name = "nap"
run = ["sh", "-c", "sleep 0.2; echo rested"]
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(base: str, method: str, path: str, body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {ADMIN}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def wait_healthy(base: str, daemon: subprocess.Popen, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"orchexd exited early with {daemon.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"orchexd did not answer /api/health within {limit:.0f} s")


def wait_final(base: str, job: str, limit: float = 60.0) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status, body = request(base, "GET", f"/api/jobs/{job}")
        if status == 200 and body["state"] not in ("queued", "running"):
            return body
        time.sleep(0.1)
    raise RuntimeError(f"job {job} did not finish within {limit:.0f} s")


def seed(base: str) -> list[str]:
    """Jobs in several final states, so lists and details have real shapes.

    Returns their ids."""

    def run(body: dict) -> dict:
        status, answer = request(base, "POST", "/api/jobs", body)
        if status != 202:
            raise RuntimeError(f"seeding {body}: {status} {answer}")
        return wait_final(base, answer["items"][0]["id"])

    delivered = run({"repo": "api", "pipeline": "codegen", "force": True})
    run({"repo": "api", "pipeline": "codegen", "force": True})
    run({"repo": "api", "pipeline": "codegen", "dryRun": True, "force": True})
    run({"repo": "api", "pipeline": "failing"})
    run({"repo": "api", "pipeline": "brief"})
    run({"repo": "api", "pipeline": "brief"})  # unchanged inputs: skipped
    latest = run({"repo": "api", "pipeline": "codegen", "force": True})
    status, answer = request(base, "POST", f"/api/jobs/{latest['id']}/rollback")
    if status != 200:
        raise RuntimeError(f"seeding a rollback: {status} {answer}")
    # The first delivery is superseded by the later ones: a 409 here marks it so.
    request(base, "POST", f"/api/jobs/{delivered['id']}/rollback")
    status, answer = request(base, "GET", "/api/jobs?limit=100")
    states = sorted({job["state"] for job in answer["items"]})
    log(f"seeded {len(answer['items'])} jobs ({', '.join(states)})")
    return [job["id"] for job in answer["items"]]


def write_config(root: Path, jobs: list[str], paths: list[Path]) -> Path:
    """The committed schemathesis.toml plus the dictionaries of this run:
    the seeded job ids and repository paths."""
    path = root / "schemathesis.toml"
    text = (HERE / "schemathesis.toml").read_text()
    for name, values in (("jobs", jobs), ("paths", [str(p) for p in paths])):
        text += f"\n[dictionaries.{name}]\nvalues = [{', '.join(json.dumps(v) for v in values)}]\n"
    path.write_text(text)
    return path


def stop(daemon: subprocess.Popen) -> int:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log("orchexd did not stop within 30 s of SIGTERM; killing it")
            daemon.kill()
            daemon.wait()
    return daemon.returncode


def schemathesis_command(base: str, config: Path, report_dir: Path) -> list[str]:
    venv_bin = Path(sys.executable).parent
    command = [
        str(venv_bin / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{base}/api/openapi.json",
        "--url",
        base,
        "--header",
        f"Authorization: Bearer {ADMIN}",
        "--checks",
        os.environ.get("FUZZ_CHECKS", CHECKS),
        "--max-examples",
        os.environ.get("FUZZ_MAX_EXAMPLES", "1000"),
        "--workers",
        os.environ.get("FUZZ_WORKERS", "2"),
        "--request-timeout",
        "35",
        "--continue-on-failure",
        "--generation-database",
        "none",
        "--report",
        os.environ.get("FUZZ_REPORTS", "junit"),
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]
    if seed_value := os.environ.get("FUZZ_SEED"):
        command += ["--seed", seed_value]
    for path in EXCLUDED:
        command += ["--exclude-path", path]
    return command


def main() -> int:
    binary = Path(os.environ.get("ORCHEXD", ROOT / "target" / "debug" / "orchexd")).resolve()
    if not binary.is_file():
        log(f"{binary} not found; run `cargo build -p orchexd` first")
        return 2
    time_limit = float(os.environ.get("FUZZ_TIME_LIMIT", "900"))
    report_dir = Path(os.environ.get("FUZZ_REPORT_DIR", ROOT / "target" / "fuzz-api" / "report"))
    report_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="orchex-fuzz-api-"))
    keep = os.environ.get("FUZZ_KEEP") == "1"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    repo = make_repo(root)
    # Not configured: POST /api/repositories may add it (and DELETE remove it).
    spare = make_repo(root, "web")
    config = root / "orchex.toml"
    config.write_text(config_text(repo))
    daemon_log = root / "orchexd.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHEX_")}
    env.update(ORCHEX_DASHBOARD__PORT=str(port), NO_COLOR="1", RUST_LOG=env.get("RUST_LOG", "info"))
    log(f"starting {binary} on {base} (work dir {root})")
    with daemon_log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(binary), "-c", str(config)], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    failures: list[str] = []
    code = 1
    try:
        wait_healthy(base, daemon)
        jobs = seed(base)
        paths = [spare, repo, root, repo / "schema"]
        command = schemathesis_command(base, write_config(root, jobs, paths), report_dir)
        log("running: " + " ".join(command).replace(ADMIN, "<admin>"))
        started = time.monotonic()
        hooks_env = dict(
            os.environ,
            SCHEMATHESIS_HOOKS="hooks",
            PYTHONPATH=str(HERE),
            FUZZ_WEBHOOK_SECRET=WEBHOOK_SECRET,
        )
        try:
            code = subprocess.run(command, cwd=root, env=hooks_env, timeout=time_limit).returncode
        except subprocess.TimeoutExpired:
            failures.append(f"schemathesis did not finish within {time_limit:.0f} s")
        log(f"schemathesis exited {code} after {time.monotonic() - started:.0f} s")
        if code != 0:
            failures.append(f"schemathesis reported failures (exit {code})")
        if daemon.poll() is not None:
            failures.append(f"orchexd died during the run (exit {daemon.returncode})")
    except Exception as err:  # noqa: BLE001 - any setup failure fails the run
        failures.append(f"setup failed: {err}")
    finally:
        status = stop(daemon)
        if status not in (0, None):
            failures.append(f"orchexd exited {status} after SIGTERM")
        text = daemon_log.read_text(errors="replace")
        errors = sum(1 for line in text.splitlines() if " ERROR " in line)
        log(f"orchexd logged {errors} ERROR lines (log copied to {report_dir / 'orchexd.log'})")
        if "panicked" in text:
            failures.append(f"orchexd logged a panic (see {daemon_log})")
            keep = True
        if failures:
            keep = True
        shutil.copy(daemon_log, report_dir / "orchexd.log")
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    for failure in failures:
        log(f"FAILED: {failure}")
    if not failures:
        log("clean: no server error, no status, content type or schema violation")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
