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
import re
import shutil
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


def log_tail(path, lines=20):
    """The last lines of a process's log, for the message that says it failed."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


def logged_port(log_path, proc, what, pattern, timeout=60):
    """The port in the first line of `proc`'s log that `pattern` matches (its group 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, errors="replace") as f:
            for m in filter(None, (pattern.search(l) for l in f)):
                return int(m.group(1))
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it was ready; its log:\n" + log_tail(log_path))
        time.sleep(0.05)
    raise SystemExit(f"{what} did not say where it listens within {timeout} s; its log:\n" + log_tail(log_path))


def mock_ports(log_path, proc, timeout=60):
    """The port of each service, from the lines services-mock prints once all of them listen."""
    line = re.compile(r"^(\S+)\s+http://127\.0\.0\.1:(\d+)$")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = {}
        with open(log_path, errors="replace") as f:
            for m in filter(None, (line.match(l.strip()) for l in f)):
                ports.setdefault(m.group(1), int(m.group(2)))
        if all(s in ports for s in SERVICES):
            return {s: ports[s] for s in SERVICES}
        if proc.poll() is not None:
            raise SystemExit(f"services-mock exited with {proc.returncode} before it was ready; its log:\n"
                             + log_tail(log_path))
        time.sleep(0.05)
    raise SystemExit(f"services-mock did not print its ports within {timeout} s; its log:\n" + log_tail(log_path))


def wait_ready(url, proc, what, log_path, timeout=60):
    """Polls `url` until it answers 200, failing at once if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it was ready; its log:\n"
                             + log_tail(log_path))
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
        # Port 0 for each service: the mock binds them itself and prints where, so no port picked
        # here can be taken by another process before the mock binds it.
        mock_log_path = os.path.join(logs, "services-mock.log")
        mock_log = open(mock_log_path, "w")
        mock = subprocess.Popen([os.path.join(RELEASE, "services-mock")] + [f"--port={s}=0" for s in SERVICES],
                                stdout=mock_log, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"))
        procs.append(mock)
        ports = mock_ports(mock_log_path, mock)
        for service, port in ports.items():
            wait_ready(f"http://127.0.0.1:{port}/_stats", mock, "services-mock", mock_log_path)
        # Port 0 here too: the BFF's "listening" line says where it bound.
        env = dict(os.environ, BFF_CONFIG=os.path.join(ROOT, "config", "partner.toml"), BFF_LISTEN="127.0.0.1:0",
                   BFF_ADMIN__LISTEN="127.0.0.1:0", BFF_LOG__FILTER="warn,bff_core::cli=info",
                   BFF_QUOTAS__PRO__REQUESTS="1000000000")
        for service in PARTNER_UPSTREAMS:
            env[f"BFF_UPSTREAMS__{service.upper()}__URL"] = f"http://127.0.0.1:{ports[service]}"
        partner_log = open(os.path.join(logs, "bff-partner.log"), "w")
        partner = subprocess.Popen([os.path.join(RELEASE, "bff-partner")], stdout=partner_log, stderr=subprocess.STDOUT,
                                   env=env, cwd=ROOT)
        procs.append(partner)
        listen = logged_port(partner_log.name, partner, "bff-partner",
                             re.compile(r"listening .*\baddr=\"?127\.0\.0\.1:(\d+)"))
        base = f"http://127.0.0.1:{listen}"
        wait_ready(base + "/healthz", partner, "bff-partner", partner_log.name)
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
