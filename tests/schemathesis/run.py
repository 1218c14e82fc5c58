#!/usr/bin/env python3
"""schemathesis against bff-partner's OpenAPI documents (issue 25).

Starts the mock services and bff-partner (release builds under target/release, built if missing)
on free ports, then runs `schemathesis run` on /v1/openapi.json and /v2/openapi.json with the demo
pro key (half the path and query values from `schemathesis.toml`'s realistic ones): every
operation, positive and negative data, and the checks not_a_server_error,
response_schema_conformance, status_code_conformance and content_type_conformance. Exits non-zero
on any failure. `.ci/run` runs it in its venv; by hand:

    python3 -m venv target/ci-venv && target/ci-venv/bin/pip install schemathesis
    target/ci-venv/bin/python tests/schemathesis/run.py [--max-examples N]
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "target", "release")
SERVICES = ["auth", "users", "orders", "notifications", "catalog", "inventory", "reviews"]
PARTNER_UPSTREAMS = ["users", "orders", "catalog", "inventory"]
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
# Realistic values for half the cases (schemathesis.toml next to this file).
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemathesis.toml")
# The pro tier's demo key (config/partner.toml, README): its daily quota outlasts the run.
DEMO_KEY = "demo-pro-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, what, timeout=60):
    """Polls `url` until it answers 200, failing at once if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it was ready; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} was not ready at {url} within {timeout} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=40, help="cases per operation and phase (default 40)")
    parser.add_argument("--schemathesis", default=None, help="the schemathesis executable (default: next to this python)")
    args = parser.parse_args()
    st = args.schemathesis or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if not os.path.exists(st):
        st = shutil.which("schemathesis")
    if not st:
        raise SystemExit("schemathesis is not installed: pip install schemathesis (in a venv), or pass --schemathesis")
    if not all(os.path.exists(os.path.join(RELEASE, b)) for b in ("services-mock", "bff-partner")):
        subprocess.run(["cargo", "build", "--release", "-p", "services-mock", "-p", "bff-partner"], cwd=ROOT, check=True)

    procs = []
    logs = tempfile.mkdtemp(prefix="schemathesis-")
    try:
        ports = {s: free_port() for s in SERVICES}
        mock_log = open(os.path.join(logs, "services-mock.log"), "w")
        mock = subprocess.Popen([os.path.join(RELEASE, "services-mock")] + [f"--port={s}={p}" for s, p in ports.items()],
                                stdout=mock_log, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"))
        procs.append(mock)
        for service, port in ports.items():
            wait_ready(f"http://127.0.0.1:{port}/_stats", mock, "services-mock")
        listen = free_port()
        env = dict(os.environ, BFF_CONFIG=os.path.join(ROOT, "config", "partner.toml"), BFF_LISTEN=f"127.0.0.1:{listen}",
                   BFF_ADMIN__LISTEN="127.0.0.1:0", BFF_LOG__FILTER="warn", BFF_QUOTAS__PRO__REQUESTS="1000000000")
        for service in PARTNER_UPSTREAMS:
            env[f"BFF_UPSTREAMS__{service.upper()}__URL"] = f"http://127.0.0.1:{ports[service]}"
        partner_log = open(os.path.join(logs, "bff-partner.log"), "w")
        partner = subprocess.Popen([os.path.join(RELEASE, "bff-partner")], stdout=partner_log, stderr=subprocess.STDOUT,
                                   env=env, cwd=ROOT)
        procs.append(partner)
        base = f"http://127.0.0.1:{listen}"
        wait_ready(base + "/healthz", partner, "bff-partner")
        failed = []
        for version in ("v1", "v2"):
            print(f"== schemathesis: {base}/{version}/openapi.json", flush=True)
            # One worker: with two, hypothesis parses lambda sources from two threads at once,
            # which CPython 3.11's `ast` does not survive ("AST constructor recursion depth
            # mismatch", seen once in CI as a schemathesis runtime error, not a check failure).
            cmd = [st, "--config-file", CONFIG, "run", f"{base}/{version}/openapi.json", "--url", base, "--checks", CHECKS,
                   "--header", f"X-Api-Key: {DEMO_KEY}", "--mode", "all", "--max-examples", str(args.max_examples),
                   "--seed", "25", "--workers", "1", "--no-color", "--request-timeout", "30",
                   "--report", "junit", "--report-dir", os.path.join(logs, version)]
            if subprocess.run(cmd, cwd=logs).returncode != 0:
                failed.append(version)
        if partner.poll() is not None:
            failed.append(f"bff-partner exited with {partner.returncode}")
        if failed:
            print(f"schemathesis failed: {', '.join(failed)}; logs and reports in {logs}", file=sys.stderr)
            sys.exit(1)
        print(f"schemathesis: 0 failures on /v1 and /v2 (reports in {logs})")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
