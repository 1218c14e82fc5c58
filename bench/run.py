#!/usr/bin/env python3
"""The load harness: builds in release mode, starts services-mock, the BFFs and the baselines on
free ports of 127.0.0.1, drives each case with wrk, stops everything it started, and prints one
markdown table (req/s, p50, p99, CPU µs per request and peak RSS of the process under test,
errors, ratios against the baselines measured in the same run). Raw results go to
bench/results/<utc>.json.

Adding a case is one entry in CASES; adding a target (a process to measure) is one branch in
Harness.start_target.

    python3 bench/run.py            # the full run (about 14 minutes on 2 cores)
    python3 bench/run.py --quick    # a few seconds per case, a subset (CI)
    python3 bench/run.py --only mobile-home   # cases whose name starts with this
    python3 bench/run.py --counts   # plus mallocs and system calls per request (perf + root)
    python3 bench/run.py --before ../old/target/release   # A/B against an earlier build
"""

import argparse
import atexit
import datetime
import glob
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
import ssl
import urllib.error
import urllib.request
import dataclasses
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
NODE_DIR = os.path.join(ROOT, "bench", "baselines", "node")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MOCK_SERVICES = ["auth", "users", "orders", "notifications", "catalog", "inventory", "reviews"]


@dataclass
class Case:
    """One measurement: a target, a path, a credential, upstream latency and connections."""

    name: str
    target: str
    path: str
    latency_ms: int = 0
    connections: int = 64
    # bearer | bearer-users (each request the next of USERS users' tokens) | apikey | session (a
    # browser's cookie and X-CSRF) | none
    credential: str = "bearer"
    env: dict = field(default_factory=dict)  # extra environment for the target (BFF_* config)
    baselines: tuple = ()  # names of cases this one is compared against (ratio of req/s)
    quick: bool = False  # part of --quick
    headers: tuple = ()  # extra request headers, "Name: value"
    revalidate: bool = False  # send If-None-Match with the ETag of a first GET: the 304 path
    tls: bool = False  # HTTPS to the target (its certificate from bff-core/testdata/tls)
    instances: int = 1  # each upstream listed this many times (`urls`): balanced, own pools
    redis: bool = False  # a private redis-server for the target, named in BFF_REDIS__URL
    body: bytes = b""  # when set, each request is a POST of it (a write), answered 201


def edited_config(short, old, new):
    """A copy of the shipped `config/<short>.toml` with `old` replaced by `new` (it must be there),
    for a case whose setting sits where no variable reaches (an entry of `[[proxy]]`)."""
    with open(os.path.join(ROOT, "config", f"{short}.toml")) as f:
        text = f.read()
    if old not in text:
        raise SystemExit(f"config/{short}.toml no longer has {old!r}: update the bench case")
    directory = tempfile.mkdtemp(prefix="bff-bench-config-")
    atexit.register(shutil.rmtree, directory, True)
    path = os.path.join(directory, f"{short}.toml")
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))
    return path


NO_SHAPING = {"BFF_SHAPING__FIELDS": "false", "BFF_SHAPING__ETAG": "false", "BFF_SHAPING__COMPRESSION": "false"}
# Upstream calls over HTTP/2 without TLS (the mock speaks h2c); the baselines stay on HTTP/1.1.
H2C = {"BFF_DEFAULTS__PROTOCOL": "http2"}
GZIP = ("Accept-Encoding: gzip",)
# A mobile order of twenty units of one sku (24 in stock; one stock call), 631 bytes of JSON, sent again and
# again with one Idempotency-Key: the orders service answers the first order each time.
ORDER = json.dumps({"items": [{"sku": "SKU-0023", "qty": 1}] * 20}).encode()
ORDER_HEADERS = ("Content-Type: application/json", "Idempotency-Key: bench-order-1")
TLS_DIR = os.path.join(ROOT, "bff-core", "testdata", "tls")
# The BFF under HTTPS, with the test certificate for 127.0.0.1.
TLS = {"BFF_TLS__CERT": os.path.join(TLS_DIR, "localhost.pem"), "BFF_TLS__KEY": os.path.join(TLS_DIR, "localhost.key")}
# A per-user limit that never triggers at bench rates.
PER_USER = {"BFF_RATE_LIMITS__PER_USER__KEY": "user", "BFF_RATE_LIMITS__PER_USER__RATE": "1000000",
            "BFF_RATE_LIMITS__PER_USER__PER": "1s"}
LEASE = {"BFF_REDIS__LEASE": "100ms"}
IN_FLIGHT_PER_USER = {"BFF_CONCURRENCY_LIMITS__PER_USER__KEY": "user",
                      "BFF_CONCURRENCY_LIMITS__PER_USER__MAX_IN_FLIGHT": "100000"}
CAPPED = {"BFF_DEFAULTS__POOL_MAX_CONNECTIONS_PER_HOST": "32"}
# How many users `bearer-users` takes turns between: as many as wrk's connections, so the
# requests in flight at once are nearly all different users'.
USERS = 64
FEED_20 = "/mobile/feed?skus=" + ",".join(f"SKU-{i:04}" for i in range(1, 21))


def otlp(ratio):
    """Span export to the users mock's OTLP sink, sampling `ratio` of new traces ({mock:users} is
    filled in with the mock's URL when the target starts)."""
    return {"BFF_TRACING__OTLP_ENDPOINT": "{mock:users}", "BFF_TRACING__SAMPLE_RATIO": str(ratio)}


def home_variants():
    """What each layer of /mobile/home costs, against the plain case. They run right after it, so
    a slow minute on a shared machine rarely falls between a variant and its baseline."""
    base = ("mobile-home-0ms-c64",)
    return [
        # The signature checked on every request (the verified-token cache off): what JWT verification costs.
        Case("mobile-home-verify-each", "bff-mobile", "/mobile/home", env={"BFF_AUTH__TOKEN_CACHE_BYTES": "0"}, baselines=base),
        # A client revalidating what it has: the upstream calls are made, the body is not sent.
        Case("mobile-home-304", "bff-mobile", "/mobile/home", baselines=base, revalidate=True),
        Case("mobile-home-fields", "bff-mobile", "/mobile/home?fields=name,badge", baselines=base),
        # Asked for gzip: the 129-byte home stays plain under compression_min_bytes, unless forced.
        Case("mobile-home-gzip", "bff-mobile", "/mobile/home", baselines=base, headers=GZIP),
        Case("mobile-home-gzip-forced", "bff-mobile", "/mobile/home", env={"BFF_SHAPING__COMPRESSION_MIN_BYTES": "0"},
             baselines=base, headers=GZIP),
        # Retries (on in the shipped config) off: what the retry layer and the deadline timer it
        # needs cost per call when nothing fails.
        Case("mobile-home-no-retry", "bff-mobile", "/mobile/home", env={"BFF_DEFAULTS__RETRY__ATTEMPTS": "1"}, baselines=base),
        # The bulkhead (on in the shipped config) off: what its semaphore costs per call.
        Case("mobile-home-no-bulkhead", "bff-mobile", "/mobile/home", env={"BFF_DEFAULTS__MAX_IN_FLIGHT": "0"}, baselines=base),
        # The circuit breaker (on in the shipped config) off: what counting outcomes costs per call.
        Case("mobile-home-no-breaker", "bff-mobile", "/mobile/home", env={"BFF_DEFAULTS__BREAKER__ENABLED": "false"},
             baselines=base),
        # Each upstream as three instances (the same mock three times, three pools): what the
        # power-of-two-choices pick and outlier tracking cost per call.
        Case("mobile-home-3-instances", "bff-mobile", "/mobile/home", baselines=base, instances=3),
        # Load shedding (on in the shipped config, 4096 in flight) off: what its semaphore costs
        # per request.
        Case("mobile-home-no-shed", "bff-mobile", "/mobile/home", env={"BFF_SERVER__MAX_IN_FLIGHT_REQUESTS": "0"},
             baselines=base),
        # The client listener answering only the hosts listed (wrk's `127.0.0.1` is the last of
        # four): what `server.allowed_hosts` costs per request.
        Case("mobile-home-allowed-hosts", "bff-mobile", "/mobile/home",
             env={"BFF_SERVER__ALLOWED_HOSTS": '["m.example.com", "*.example.com", "localhost", "127.0.0.1"]'},
             baselines=base),
        # Hedging users after 50 ms (never reached at 0 ms latency): what a hedged call costs when
        # no hedge is sent (a request copy, a timer, a boxed future).
        Case("mobile-home-hedged", "bff-mobile", "/mobile/home", env={"BFF_UPSTREAMS__USERS__HEDGE_AFTER": "50ms"},
             baselines=base),
        # Coalescing on for every upstream: wrk's 64 connections are one user, so identical calls
        # in flight at once merge (what it costs, and what it saves).
        Case("mobile-home-coalesced", "bff-mobile", "/mobile/home", env={"BFF_DEFAULTS__COALESCE": "true"}, baselines=base),
        # A per-user rate limit too high to trigger (a million a second): what checking it
        # costs, counted in the process (governor) and in a Redis beside it (one script call).
        Case("mobile-home-rate-limited", "bff-mobile", "/mobile/home", env=PER_USER, baselines=base, quick=True),
        Case("mobile-home-rate-limited-redis", "bff-mobile", "/mobile/home", env=PER_USER, baselines=base, redis=True,
             quick=True),
        # The same two with 64 users taking turns, so the requests waiting on Redis at once
        # count on different keys: Redis's work per request is at its most.
        Case("mobile-home-rate-limited-users", "bff-mobile", "/mobile/home", env=PER_USER, baselines=base,
             credential="bearer-users"),
        Case("mobile-home-rate-limited-redis-users", "bff-mobile", "/mobile/home", env=PER_USER, redis=True,
             baselines=("mobile-home-rate-limited-users",), credential="bearer-users"),
        # The same two in Redis with leases of 100 ms (`redis.lease`): a busy key's requests
        # spend a share of its budget counted in one script call.
        Case("mobile-home-rate-limited-redis-lease", "bff-mobile", "/mobile/home", env={**PER_USER, **LEASE},
             redis=True, baselines=("mobile-home-rate-limited",)),
        Case("mobile-home-rate-limited-redis-users-lease", "bff-mobile", "/mobile/home", env={**PER_USER, **LEASE},
             redis=True, baselines=("mobile-home-rate-limited-users",), credential="bearer-users"),
        # A per-user concurrency limit too high to trigger: what taking and giving back a place
        # costs (a map under a lock, and the response body wrapped to hold it), with one user's
        # 64 requests on one key and with 64 users' on 64 keys.
        Case("mobile-home-concurrency-limited", "bff-mobile", "/mobile/home", env=IN_FLIGHT_PER_USER, baselines=base,
             quick=True),
        Case("mobile-home-concurrency-limited-users", "bff-mobile", "/mobile/home", env=IN_FLIGHT_PER_USER,
             baselines=base, credential="bearer-users"),
        # Spans exported over OTLP/HTTP to the mock's sink (`POST /v1/traces`): 1% of new traces
        # sampled (a server span and three attempt spans each), then every one.
        Case("mobile-home-otlp-1pct", "bff-mobile", "/mobile/home", env=otlp(0.01), baselines=base, quick=True),
        Case("mobile-home-otlp-all", "bff-mobile", "/mobile/home", env=otlp(1.0), baselines=base),
        # TLS termination: HTTPS from the load generator (HTTP/1.1, kept-alive connections).
        Case("mobile-home-tls", "bff-mobile", "/mobile/home", env=TLS, baselines=base, tls=True),
        # The same with a host name browsers keep HSTS for: `Strict-Transport-Security` on every
        # answer (on by default with TLS; `mobile-home-tls` asks for 127.0.0.1, which gets none).
        Case("mobile-home-tls-hsts", "bff-mobile", "/mobile/home", env=TLS, baselines=("mobile-home-tls",), tls=True,
             headers=("Host: bff.test",)),
        # A write, then the same order sent in gzip and decoded by the BFF
        # (`server.request_body_codings`): what reading a compressed body costs.
        Case("mobile-place-order", "bff-mobile", "/mobile/orders", body=ORDER, headers=ORDER_HEADERS),
        Case("mobile-place-order-gzip", "bff-mobile", "/mobile/orders", body=gzip.compress(ORDER, mtime=0),
             env={"BFF_SERVER__REQUEST_BODY_CODINGS": '["gzip"]'}, baselines=("mobile-place-order",),
             headers=ORDER_HEADERS + ("Content-Encoding: gzip",)),
    ]


def mobile_home_cases():
    cases = []
    for latency in (0, 20):
        for conns in (64, 256):
            tag = f"{latency}ms-c{conns}"
            quick = latency == 0 and conns == 64
            base = (f"node-seed-{tag}", f"node-tuned-{tag}", f"minimal-{tag}")
            cases += [
                Case(f"node-seed-{tag}", "node-seed", "/mobile/home", latency, conns, "none", quick=quick),
                Case(f"node-tuned-{tag}", "node-tuned", "/mobile/home", latency, conns, "none", quick=quick),
                Case(f"minimal-{tag}", "minimal", "/mobile/home", latency, conns, "none", quick=quick),
                Case(f"mobile-home-{tag}", "bff-mobile", "/mobile/home", latency, conns, baselines=base, quick=quick),
                Case(f"mobile-home-noshape-{tag}", "bff-mobile", "/mobile/home", latency, conns, env=NO_SHAPING, baselines=base),
                Case(f"mobile-home-h2c-{tag}", "bff-mobile", "/mobile/home", latency, conns, env=H2C, baselines=base, quick=quick),
            ]
            if tag == "0ms-c64":
                cases += home_variants()
            if latency == 0:
                # At most 32 connections to each upstream instance: calls over it wait for one.
                cases.append(Case(f"mobile-home-capped-{tag}", "bff-mobile", "/mobile/home", latency, conns,
                                  env=CAPPED, baselines=base + (f"mobile-home-{tag}",)))
    # Latency added by the BFF at low load: compare p50 with one direct call at the same latency.
    cases += [
        Case("direct-users-20ms-c8", "direct", "/users/42", 20, 8, "none"),
        Case("mobile-home-20ms-c8", "bff-mobile", "/mobile/home", 20, 8, baselines=("direct-users-20ms-c8", "minimal-20ms-c8")),
        Case("minimal-20ms-c8", "minimal", "/mobile/home", 20, 8, "none"),
        Case("mobile-home-h2c-20ms-c8", "bff-mobile", "/mobile/home", 20, 8, env=H2C, baselines=("direct-users-20ms-c8", "minimal-20ms-c8")),
    ]
    return cases


CASES = mobile_home_cases() + [
    Case("mobile-feed-20", "bff-mobile", FEED_20, quick=False),
    Case("mobile-feed-20-gzip", "bff-mobile", FEED_20, baselines=("mobile-feed-20",), headers=GZIP),
    Case("web-home", "bff-web", "/web/home", quick=True),
    Case("web-home-h2c", "bff-web", "/web/home", env=H2C, baselines=("web-home",)),
    # The same page for a browser: the session cookie (looked up in the memory store) and the
    # CSRF checks instead of a bearer token.
    Case("web-home-session", "bff-web", "/web/home", credential="session", baselines=("web-home",)),
    Case("web-product", "bff-web", "/web/products/SKU-0007"),
    Case("partner-v2-order", "bff-partner", "/v2/orders/4205", credential="apikey", quick=True),
    Case("partner-v1-orders", "bff-partner", "/v1/orders?user=42", credential="apikey"),
    Case("partner-v2-orders", "bff-partner", "/v2/orders?user=42", credential="apikey"),
    Case("partner-v2-product", "bff-partner", "/v2/products/SKU-0007", credential="apikey"),
    Case("mobile-order", "bff-mobile", "/mobile/orders/4205"),
    Case("mobile-product", "bff-mobile", "/mobile/products/SKU-0007"),
    # The catalog cache and coalescing (on in the shipped config) off: every product page calls
    # the catalog.
    Case("mobile-product-no-cache", "bff-mobile", "/mobile/products/SKU-0007", baselines=("mobile-product",),
         env={"BFF_UPSTREAMS__CATALOG__CACHE_BYTES": "0", "BFF_UPSTREAMS__CATALOG__COALESCE": "false"}),
    # Passthrough: nginx with keepalive to the same mock, then bff-web's shipped passthrough
    # routes (public, so no credential), each right after its nginx case.
    Case("direct-users", "direct", "/users/42", credential="none", quick=True),
    Case("nginx-users", "nginx", "/users/42", credential="none", baselines=("direct-users",), quick=True),
    Case("nginx-product", "nginx", "/api/catalog/products/SKU-0007", credential="none", quick=True),
    Case("passthrough-product", "bff-web", "/api/catalog/products/SKU-0007", credential="none",
         baselines=("nginx-product",), quick=True),
    # The product route with a `max_in_flight` of its own (never reached at 64 connections): what
    # a route's cap costs per request.
    Case("passthrough-product-capped", "bff-web", "/api/catalog/products/SKU-0007", credential="none",
         baselines=("passthrough-product",),
         env={"BFF_CONFIG": edited_config("web", 'rewrite = "/products/{rest}"\naccess = "public"\n',
                                          'rewrite = "/products/{rest}"\naccess = "public"\nmax_in_flight = 4096\n')}),
    # The floor of this stack: hyper's server and pooled client, no policies.
    Case("minimal-proxy-product", "minimal-proxy", "/api/catalog/products/SKU-0007", credential="none",
         baselines=("nginx-product",)),
    Case("nginx-file-1k", "nginx", "/api/catalog/files/1024", credential="none"),
    Case("passthrough-file-1k", "bff-web", "/api/catalog/files/1024", credential="none", baselines=("nginx-file-1k",)),
]


def ephemeral_ports():
    """The range the kernel gives outgoing connections and port-0 binds their ports from."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


HANDED_OUT = set()


def free_port():
    """A port that nothing listens on, for a process that cannot report one it picked itself
    (nginx, Node, Redis, a replica that must come back on the same port). It is picked below the
    ephemeral range when there is room: no outgoing connection and no port-0 bind (the tests')
    can take it between this check and the process's bind, nor while a replica restarts."""
    low, _ = ephemeral_ports()
    candidates = list(range(max(1024, low - 16384), low)) if low > 2048 else []
    for port in (random.sample(candidates, min(64, len(candidates))) if candidates else []):
        if port in HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        HANDED_OUT.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mock_ports(log_path, proc, timeout=60):
    """The port of each mock service, from the lines services-mock prints once all of them listen."""
    line = re.compile(r"^(\S+)\s+http://127\.0\.0\.1:(\d+)$")
    deadline = time.time() + timeout
    while time.time() < deadline:
        ports = {}
        with open(log_path, errors="replace") as f:
            for m in filter(None, (line.match(l.strip()) for l in f)):
                ports.setdefault(m.group(1), int(m.group(2)))
        if all(s in ports for s in MOCK_SERVICES):
            return {s: ports[s] for s in MOCK_SERVICES}
        if proc.poll() is not None:
            raise SystemExit(f"services-mock exited with {proc.returncode} before it was ready; see {log_path}")
        time.sleep(0.05)
    raise SystemExit(f"services-mock did not print its ports within {timeout}s; see {log_path}")


class EarlyExit(SystemExit):
    """A process that exited before it listened."""


def port_taken(log_path):
    """Whether a process's log says its port was taken (by another process, between `free_port`
    picking it and the process binding it: a port of the ephemeral range, when there was no room
    below it)."""
    try:
        with open(log_path, errors="replace") as f:
            return re.search(r"(?i)address already in use|EADDRINUSE", f.read()) is not None
    except OSError:
        return False


def wait_port(port, proc, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise EarlyExit(f"{what} exited with {proc.returncode} before listening; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout}s")


def http(method, url, body=None, headers=None, data=None):
    """(status, headers, body); a non-2xx status is returned, not raised (urllib raises even on 304).
    `body` is sent as JSON, `data` (bytes) as it is."""
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None:
        req.add_header("content-type", "application/json")
    context = ssl.create_default_context(cafile=os.path.join(TLS_DIR, "ca.pem")) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def no_redirect(url, headers=None):
    """(status, headers) of a GET, its redirect not followed (a browser's login, step by step)."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def set_cookie(headers, name):
    for line in headers.get_all("Set-Cookie") or []:
        if line.startswith(name + "="):
            return line.split(";", 1)[0].split("=", 1)[1]
    raise SystemExit(f"no {name} cookie in {headers}")


def sign_in(port, user=42):
    """A browser session on bff-web at `port`: /bff/login, the mock provider, /bff/callback."""
    base = f"http://127.0.0.1:{port}"
    status, h = no_redirect(f"{base}/bff/login?returnUrl=/&login_hint={user}")
    if status != 302:
        raise SystemExit(f"{base}/bff/login answered {status}")
    login = set_cookie(h, "__Host-bff-login")
    status, h = no_redirect(h["Location"])
    if status != 302 or "code=" not in h.get("Location", ""):
        raise SystemExit(f"the mock provider answered {status}: {h}")
    query = h["Location"].split("?", 1)[1]
    status, h = no_redirect(f"{base}/bff/callback?{query}", {"Cookie": f"__Host-bff-login={login}"})
    if status != 302:
        raise SystemExit(f"{base}/bff/callback answered {status}")
    return set_cookie(h, "__Host-bff-session")


def write_results(args, kind, results):
    """Writes a mode's results as JSON (`--out`, else bench/results/<utc>-<kind>.json); its path."""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or os.path.join(ROOT, "bench", "results", f"{started}-{kind}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    return out


REDIS_SERIES = re.compile(r"^(bff_redis_checks_total|bff_redis_call_seconds_count) (\S+)$", re.M)


def redis_batching(admin, before=None):
    """With no `before`: the BFF's counts of limit checks sent to Redis and of Redis calls. With
    it: the checks per call since then (None without an admin port, or from a build that does not
    count them)."""
    if admin is None:
        return None
    counts = {name: float(value) for name, value in REDIS_SERIES.findall(http("GET", f"http://127.0.0.1:{admin}/metrics")[2].decode())}
    if len(counts) < 2:
        return None
    if before is None:
        return counts
    calls = counts["bff_redis_call_seconds_count"] - before["bff_redis_call_seconds_count"]
    return (counts["bff_redis_checks_total"] - before["bff_redis_checks_total"]) / calls if calls else None


def pids_of(pid):
    """The process and its children (nginx workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLK_TCK


def peak_rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total / (1024 * 1024)


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(out):
    result = {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None, "errors": 0}
    for line in out.splitlines():
        line = line.strip()
        if m := re.match(r"(\d+) requests in", line):
            result["requests"] = int(m.group(1))
        elif m := re.match(r"Requests/sec:\s+([\d.]+)", line):
            result["rps"] = float(m.group(1))
        elif m := re.match(r"50%\s+(\S+)", line):
            result["p50_ms"] = to_ms(m.group(1))
        elif m := re.match(r"99%\s+(\S+)", line):
            result["p99_ms"] = to_ms(m.group(1))
        elif m := re.match(r"Non-2xx or 3xx responses:\s+(\d+)", line):
            result["errors"] += int(m.group(1))
        elif m := re.match(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", line):
            result["errors"] += sum(int(x) for x in m.groups())
    return result


class Harness:
    def __init__(self, args):
        self.args = args
        self.procs = []
        self.logs = tempfile.mkdtemp(prefix="bff-bench-")
        # A soak's access logs run to gigabytes: the directory goes at exit unless asked for or the run failed.
        atexit.register(self.remove_logs)
        self.mock = {}
        self.targets = {}

    def pinned(self, cmd, role):
        """With --pin, the process under test gets core 1 to itself; the mock and wrk share core 0."""
        if not self.args.pin:
            return cmd
        return ["taskset", "-c", "1" if role == "target" else "0"] + cmd

    def counted(self, cmd):
        """With --callgrind, a Rust target runs under callgrind, which counts its instructions."""
        if not self.args.callgrind:
            return cmd
        return ["valgrind", "--tool=callgrind", *os.environ.get("BENCH_CALLGRIND_ARGS", "").split(), f"--callgrind-out-file={self.logs}/cg.%p"] + cmd

    def spawn(self, name, cmd, env=None, cwd=None, role="target"):
        cmd = self.pinned(cmd, role)
        log = open(os.path.join(self.logs, f"{name}.log"), "w")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_") and k != "RUST_LOG"}
        full_env.update(env or {})
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def remove_logs(self):
        if self.args.keep_logs or FAILED:
            print(f"logs kept: {self.logs}", file=sys.stderr)
            return
        shutil.rmtree(self.logs, ignore_errors=True)

    def stop_all(self):
        for proc in reversed(self.procs):
            self.stop(proc)

    # === the mock ===

    def start_mock(self):
        # Port 0 for each service: the mock binds them itself and prints where, so no port picked
        # here can be taken by another process before the mock binds it.
        cmd = [os.path.join(RELEASE, "services-mock")] + [f"--port={s}=0" for s in MOCK_SERVICES]
        proc = self.spawn("services-mock", cmd, env={"RUST_LOG": "warn"}, role="load")
        ports = mock_ports(os.path.join(self.logs, "services-mock.log"), proc)
        for port in ports.values():
            wait_port(port, proc, "services-mock")
        self.mock = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
        self.mock_proc = proc
        status, _, body = http("POST", self.mock["auth"] + "/token", {"sub": "42", "scope": "profile orders", "ttl_s": 86400})
        if status != 200:
            raise SystemExit(f"services-mock: POST /token answered {status}: {body[:200]!r}")
        self.token = json.loads(body)["access_token"]

    def set_latency(self, ms):
        for service in MOCK_SERVICES:
            if service != "auth":
                status, _, _ = http("PUT", self.mock[service] + "/_faults", {"latency_ms": ms})
                if status != 200:
                    raise SystemExit(f"services-mock: PUT /_faults on {service} answered {status}")

    # === targets: each returns (process, port) ===

    def on_a_free_port(self, start, name):
        """`start(port)` on a free port, again on another (at most twice) when the one it was
        given was taken before it could bind it, as its log `name(port)` says."""
        for attempt in range(3):
            port = free_port()
            try:
                return start(port)
            except EarlyExit:
                if attempt == 2 or not port_taken(os.path.join(self.logs, f"{name(port)}.log")):
                    raise
                print(f"… {name(port)}: its port was taken before it bound it; again on another", file=sys.stderr)

    def start_redis(self):
        """A private redis-server on a free port, for the cases that count limits in Redis."""
        return self.on_a_free_port(self.start_redis_on, lambda port: f"redis-{port}")

    def start_redis_on(self, port):
        server = shutil.which("redis-server")
        if not server:
            raise SystemExit("redis-server is not installed: apt-get install redis-server")
        cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = self.spawn(f"redis-{port}", cmd, role="load")
        wait_port(port, proc, "redis-server")
        return proc, f"redis://127.0.0.1:{port}"

    def start_target(self, name, env, instances=1, redis=False, port=None):
        if port:
            return self.start_target_on(name, env, instances, redis, port)
        start = lambda port: self.start_target_on(name, env, instances, redis, port)
        return self.on_a_free_port(start, lambda _: name)

    def start_target_on(self, name, env, instances, redis, port):
        m = self.mock
        if redis:
            self.redis_proc, url = self.start_redis()
            env = {**env, "BFF_REDIS__URL": url}
        # `bff-mobile@before`: the same BFF from the --before build.
        name, _, before = name.partition("@")
        binaries = self.args.before if before else RELEASE
        if name in ("bff-mobile", "bff-web", "bff-partner"):
            # Every policy on, access logs included, as the shipped config has it.
            # The local-development config, as a user runs it (a binary has none built in).
            short = name.removeprefix("bff-")
            cfg = {"BFF_CONFIG": os.path.join(ROOT, "config", f"{short}.toml"),
                   "BFF_LISTEN": f"127.0.0.1:{port}", "BFF_LOG__FORMAT": "json"}
            if not before:
                # An ephemeral admin port, so runs never collide on the shipped one (a build
                # from before the admin listener has no such key).
                cfg["BFF_ADMIN__LISTEN"] = "127.0.0.1:0"
            if name == "bff-partner":
                # The pro tier's 100,000 a day would run out within a long case: the bench
                # measures the quota's check, not its refusals (an earlier build too).
                cfg["BFF_QUOTAS__PRO__REQUESTS"] = "1000000000000"
            if name == "bff-web":
                # Its browser sessions' provider: the mock's, with the mock's demo client secret.
                cfg["BFF_OIDC__ISSUER"] = m["auth"]
                cfg["BFF_OIDC__CLIENT_SECRET"] = "demo-web-secret"
                # A redirect URI the mock has registered; the harness takes the callback to this port.
                cfg["BFF_OIDC__REDIRECT_URI"] = "http://127.0.0.1:8080/bff/callback"
            for service in MOCK_SERVICES:
                if service == "auth":
                    if name != "bff-partner":
                        cfg["BFF_AUTH__JWKS_URL"] = m["auth"] + "/.well-known/jwks.json"
                elif (name, service) not in {("bff-partner", "notifications"), ("bff-partner", "reviews")}:
                    url = m[service]
                    if instances > 1:
                        url = "[" + ", ".join([f'"{m[service]}"'] * instances) + "]"
                    cfg[f"BFF_UPSTREAMS__{service.upper()}__URL"] = url
            cfg.update({k: re.sub(r"\{mock:(\w+)\}", lambda g: m[g.group(1)], v) for k, v in env.items()})
            # The earlier build's log beside the new one's (`bff-mobile@before.log`), not over it.
            log_name = f"{name}@before" if before else name
            proc = self.spawn(log_name, self.counted([os.path.join(binaries, name)]), env=cfg)
        elif name == "minimal":
            cmd = [os.path.join(RELEASE, "minimal-bff"), f"127.0.0.1:{port}", m["users"], m["orders"], m["notifications"]]
            proc = self.spawn(name, self.counted(cmd))
        elif name == "minimal-proxy":
            cmd = [os.path.join(RELEASE, "minimal-proxy"), f"127.0.0.1:{port}", m["catalog"], "/api/catalog/", "/"]
            proc = self.spawn(name, self.counted(cmd), env=env)
        elif name in ("node-seed", "node-tuned"):
            script = "seed.js" if name == "node-seed" else "tuned.js"
            node_env = {"USERS": m["users"], "ORDERS": m["orders"], "NOTIFS": m["notifications"], "PORT": str(port)}
            proc = self.spawn(name, ["node", script], env=node_env, cwd=NODE_DIR)
        elif name == "nginx":
            prefix = tempfile.mkdtemp(prefix="nginx-", dir=self.logs)
            with open(os.path.join(ROOT, "bench", "baselines", "nginx.conf.template")) as f:
                conf = f.read()
            upstream = m["users"].removeprefix("http://")
            conf = conf.replace("{port}", str(port)).replace("{upstream}", upstream)
            conf = conf.replace("{catalog}", m["catalog"].removeprefix("http://"))
            conf = conf.replace("{workers}", str(os.cpu_count() or 1)).replace("{prefix}", prefix)
            path = os.path.join(prefix, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            proc = self.spawn(name, [shutil.which("nginx") or "/usr/sbin/nginx", "-c", path, "-p", prefix])
        elif name == "direct":
            return self.mock_proc, int(m["users"].rsplit(":", 1)[1])
        else:
            raise SystemExit(f"unknown target {name}")
        wait_port(port, proc, name)
        return proc, port

    # === one case ===

    def users_script(self):
        """A wrk script sending each request with the next of USERS users' tokens (minted once)."""
        path = os.path.join(self.logs, "users.lua")
        if not os.path.exists(path):
            self.user_tokens = [token(self, str(1000 + i), ttl_s=86400) for i in range(USERS)]
            with open(path, "w") as f:
                f.write("local tokens = {" + ",".join(f'"Bearer {t}"' for t in self.user_tokens) + "}\n")
                f.write("local i = 0\nfunction request()\n  i = i % #tokens + 1\n  local headers = {}\n"
                        "  for k, v in pairs(wrk.headers) do headers[k] = v end\n"
                        "  headers.Authorization = tokens[i]\n  return wrk.format(nil, nil, headers)\nend\n")
        return path

    def body_script(self, case):
        """A wrk script making each request a POST of the case's body, read from a file."""
        body = os.path.join(self.logs, f"{case.name}.body")
        with open(body, "wb") as f:
            f.write(case.body)
        path = os.path.join(self.logs, f"{case.name}.lua")
        with open(path, "w") as f:
            f.write(f'local file = io.open("{body}", "rb")\nwrk.method = "POST"\nwrk.body = file:read("*a")\n'
                    "file:close()\n")
        return path

    def run_case(self, case):
        self.set_latency(case.latency_ms)
        env, admin = case.env, None
        if case.redis and case.target.startswith("bff-"):
            # Its metrics say how many requests shared each Redis call.
            admin = free_port()
            env = {**env, "BFF_ADMIN__LISTEN": f"127.0.0.1:{admin}"}
        proc, port = self.start_target(case.target, env, case.instances, case.redis)
        idle_rss = rss_mb(pids_of(proc.pid))
        headers, script = list(case.headers), None
        if case.credential == "bearer":
            headers.append(f"Authorization: Bearer {self.token}")
        elif case.credential == "bearer-users":
            script = self.users_script()
            headers.append(f"Authorization: Bearer {self.user_tokens[0]}")
        elif case.credential == "apikey":
            headers.append("X-Api-Key: demo-pro-key")
        elif case.credential == "session":
            headers += [f"Cookie: __Host-bff-session={sign_in(port)}", "X-CSRF: 1"]
        url = f"{'https' if case.tls else 'http'}://127.0.0.1:{port}{case.path}"
        if case.body:
            if script:
                raise SystemExit(f"{case.name}: a write case has one credential, not a script's")
            script = self.body_script(case)
            status, _, answer = http("POST", url, headers=dict(h.split(": ", 1) for h in headers), data=case.body)
            if status != 201:
                raise SystemExit(f"{case.name}: POST {url} answered {status}: {answer[:300]!r}")
            answer_headers = {}
        else:
            status, answer_headers, _ = http("GET", url, headers=dict(h.split(": ", 1) for h in headers))
            if status != 200:
                raise SystemExit(f"{case.name}: GET {url} answered {status}")
        if case.revalidate:
            if "ETag" not in answer_headers:
                raise SystemExit(f"{case.name}: GET {url} sent no ETag to revalidate")
            headers.append(f"If-None-Match: {answer_headers['ETag']}")
            status, _, _ = http("GET", url, headers=dict(h.split(": ", 1) for h in headers))
            if status != 304:
                raise SystemExit(f"{case.name}: GET {url} with If-None-Match answered {status}, not 304")
        # Under callgrind a target runs tens of times slower: few connections keep it in its deadlines.
        connections = min(case.connections, 8) if self.args.callgrind else case.connections
        wrk = self.pinned(["wrk", "-t1"], "load") + [f"-c{connections}", "--latency"]
        for h in headers:
            wrk += ["-H", h]
        if script:
            wrk += ["-s", script]
        if self.args.callgrind:
            return self.count_instructions(case, proc, wrk, url)
        # Warm up (connections, pools, JIT for Node), then measure.
        subprocess.run(wrk + [f"-d{self.args.warmup}s", url], capture_output=True, text=True, check=True)
        pids = pids_of(proc.pid)
        # A Redis beside the BFF does part of the work of its limits: its CPU is counted apart.
        redis_pids = [self.redis_proc.pid] if getattr(self, "redis_proc", None) else []
        batching = redis_batching(admin)
        cpu_before, redis_before = cpu_seconds(pids), cpu_seconds(redis_pids)
        out = subprocess.run(wrk + [f"-d{self.args.duration}s", url], capture_output=True, text=True, check=True).stdout
        cpu, redis_cpu = cpu_seconds(pids) - cpu_before, cpu_seconds(redis_pids) - redis_before
        batching = redis_batching(admin, batching)
        result = parse_wrk(out)
        if self.args.counts:
            result.update(count_per_request(pids, wrk, url))
        result.update(
            case=case.name,
            target=case.target,
            path=case.path,
            latency_ms=case.latency_ms,
            connections=case.connections,
            cpu_us_per_req=(cpu / result["requests"] * 1e6) if result["requests"] else None,
            redis_cpu_us_per_req=(redis_cpu / result["requests"] * 1e6) if result["requests"] and redis_pids else None,
            redis_checks_per_call=batching,
            peak_rss_mb=peak_rss_mb(pids),
            idle_rss_mb=idle_rss,
            baselines=list(case.baselines),
        )
        for stopping in (proc, getattr(self, "redis_proc", None)):
            if stopping is not None and stopping is not self.mock_proc:
                self.stop(stopping)
                self.procs.remove(stopping)
        self.redis_proc = None
        return result


    def count_instructions(self, case, proc, wrk, url):
        """User-space instructions per request of a target under callgrind (bench/README.md,
        "Counting instructions"): counters zeroed after the warm-up, dumped after the run."""
        result = {"case": case.name, "target": case.target, "path": case.path, "latency_ms": case.latency_ms,
                  "connections": min(case.connections, 8), "baselines": list(case.baselines)}
        if not any(arg == "--tool=callgrind" for arg in proc.args):
            raise SystemExit(f"--callgrind: {case.name}'s target {case.target} is not a Rust binary of ours")
        subprocess.run(wrk + [f"-d{self.args.warmup}s", url], capture_output=True, text=True, check=True)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        out = subprocess.run(wrk + [f"-d{self.args.duration}s", url], capture_output=True, text=True, check=True).stdout
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        dumps = sorted(glob.glob(os.path.join(self.logs, f"cg.{proc.pid}.*")), key=os.path.getmtime)
        if not dumps:
            raise SystemExit(f"--callgrind: no dump of {case.name} in {self.logs}")
        with open(dumps[-1]) as f:
            totals = next((line.split()[1] for line in f if line.startswith(("totals:", "summary:"))), None)
        result.update(parse_wrk(out))
        result["instructions_per_req"] = int(totals) / result["requests"] if totals and result["requests"] else None
        result.update(cpu_us_per_req=None, peak_rss_mb=None, idle_rss_mb=None)
        self.stop(proc)
        self.procs.remove(proc)
        return result


COUNT_SECONDS = 3


def malloc_probe():
    """Adds a perf uprobe on this machine's libc `malloc` (once), so `perf stat` can count calls."""
    if not shutil.which("perf"):
        raise SystemExit("--counts needs perf (apt-get install linux-perf) and root")
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    if "probe_libc:malloc" in listed:
        return
    with open("/proc/self/maps") as f:
        libc = next((line.split()[-1] for line in f if re.search(r"/libc[.-][^/]*so", line)), None)
    if not libc:
        raise SystemExit("--counts: cannot find libc in /proc/self/maps")
    added = subprocess.run(["perf", "probe", "-x", libc, "malloc"], capture_output=True, text=True)
    if added.returncode != 0:
        raise SystemExit(f"--counts: `perf probe -x {libc} malloc` failed (root needed?): {added.stderr.strip()}")


# The allocation entry points of jemalloc as tikv-jemalloc-sys names them: our BFFs link it
# statically, so their allocations never reach libc's `malloc`.
JEMALLOC_ALLOCS = ("_rjem_malloc", "_rjem_mallocx", "_rjem_calloc")


def jemalloc_probes(pids):
    """perf events on the jemalloc allocation functions of each binary among `pids` that has them,
    added afresh (a probe is an offset into one build of the binary)."""
    events = []
    for exe in sorted({os.path.realpath(f"/proc/{pid}/exe") for pid in pids if os.path.exists(f"/proc/{pid}/exe")}):
        group = f"bench{zlib.crc32(exe.encode()):08x}"
        subprocess.run(["perf", "probe", "-q", "-d", f"{group}:*"], capture_output=True)
        for function in JEMALLOC_ALLOCS:
            event = f"{group}:{function.lstrip('_')}"
            added = subprocess.run(["perf", "probe", "-q", "-x", exe, "-a", f"{event}={function}"],
                                   capture_output=True, text=True)
            if added.returncode == 0:
                events.append(event)
    return events


def count_per_request(pids, wrk, url):
    """Allocations and system calls per request of `pids`, over a separate short load run.

    Allocations are the calls to libc's `malloc` plus, in a binary linking jemalloc, to its own
    `malloc`, `mallocx` and `calloc`. Counts do not depend on how busy the machine is, so they
    show a change that timing on a shared VM would hide. perf attaches a few ms after wrk starts:
    the ratio is low by well under 1%.
    """
    allocs = ["probe_libc:malloc"] + jemalloc_probes(pids)
    with tempfile.NamedTemporaryFile("r", suffix=".perf-stat") as stat:
        perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", stat.name, "-e", ",".join(allocs + ["raw_syscalls:sys_enter"]),
             "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        out = subprocess.run(wrk + [f"-d{COUNT_SECONDS}s", url], capture_output=True, text=True, check=True).stdout
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=30)
        counts = {}
        for line in stat.read().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].replace(".", "").isdigit():
                counts[fields[2]] = float(fields[0])
    requests = parse_wrk(out)["requests"]
    if not requests or "probe_libc:malloc" not in counts:
        raise SystemExit(f"--counts: no requests or no counts for {url}")
    return {
        "mallocs_per_req": sum(counts.get(event, 0) for event in allocs) / requests,
        "syscalls_per_req": counts.get("raw_syscalls:sys_enter", 0) / requests,
    }


def build():
    cmd = ["cargo", "build", "--release", "-p", "services-mock", "-p", "bff-mobile", "-p", "bff-web", "-p", "bff-partner",
           "-p", "bff-bench", "--bin", "services-mock", "--bin", "bff-mobile", "--bin", "bff-web", "--bin", "bff-partner",
           "--bin", "minimal-bff", "--bin", "minimal-proxy"]
    subprocess.run(cmd, cwd=ROOT, check=True)


def fmt(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def redis_cpu(r):
    """The CPU a Redis beside the BFF spent per request, when there was one."""
    if r.get("redis_cpu_us_per_req") is None:
        return ""
    batched = f", {fmt(r['redis_checks_per_call'])} checks a call" if r.get("redis_checks_per_call") else ""
    return f" (+{fmt(r['redis_cpu_us_per_req'])} Redis{batched})"


def paired(case, base, f):
    """`f` of a case's run and its baseline's run in the same round, the median over rounds.

    A slow minute on a shared machine then moves both sides of a comparison, not one: comparing
    each side's own median run could set a fast run against a slow one.
    """
    return statistics.median(f(a, b) for a, b in zip(case["runs"], base["runs"]))


def rps_ratio(case, base):
    return paired(case, base, lambda a, b: a["rps"] / b["rps"] if b["rps"] else float("inf"))


def table(results):
    by_name = {r["case"]: r for r in results}
    lines = [
        "| case | target | conns | upstream latency | req/s | p50 ms | p99 ms | CPU µs/req | idle / peak RSS MB | errors | req/s vs baselines |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    counted = any("mallocs_per_req" in r for r in results)
    if any("instructions_per_req" in r for r in results):
        lines = ["| case | target | conns | requests | instructions per request | vs baselines |", "|---|---|---|---|---|---|"]
        for r in results:
            ratios = [f"{r['instructions_per_req'] / by_name[b]['instructions_per_req']:.3f}× {b}"
                      for b in r["baselines"] if b in by_name and by_name[b].get("instructions_per_req")
                      and r.get("instructions_per_req")]
            lines.append(f"| {r['case']} | {r['target']} | {r['connections']} | {r['requests']} | "
                         f"{fmt(r.get('instructions_per_req'), 0)} | {'; '.join(ratios)} |")
        return "\n".join(lines)
    if counted:
        lines[0] = lines[0].replace(" errors |", " errors | mallocs / syscalls per req |")
        lines[1] += "---|"
    for r in results:
        ratios = []
        for b in r["baselines"]:
            if b in by_name and by_name[b]["rps"]:
                ratios.append(f"{rps_ratio(r, by_name[b]):.2f}× {b}")
        lines.append(
            f"| {r['case']} | {r['target']} | {r['connections']} | {r['latency_ms']} ms | {fmt(r['rps'], 0)} | "
            f"{fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {fmt(r['cpu_us_per_req'])}{redis_cpu(r)} | {fmt(r['idle_rss_mb'])} / {fmt(r['peak_rss_mb'])} | "
            f"{r['errors']} | "
            + (f"{fmt(r.get('mallocs_per_req'))} / {fmt(r.get('syscalls_per_req'))} | " if counted else "")
            + f"{'; '.join(ratios)} |"
        )
    return "\n".join(lines)


# The targets of the benchmark issue, checked against whatever cases ran. A check yields
# (measure, case, value, met) rows; the table gives each measure's range over its cases and how
# many met it. A target whose cases did not run is reported as not measured.
OURS = ("bff-mobile", "bff-web", "bff-partner")
HOME = re.compile(r"mobile-home(-h2c)?-(\d+ms-c\d+)")


def _home_vs_node(by_name):
    for name, r in by_name.items():
        m = HOME.fullmatch(name)
        if not m or m.group(2) == "20ms-c8":
            continue
        for node, floor in (("node-seed", 12.0), ("node-tuned", 4.5)):
            base = by_name.get(f"{node}-{m.group(2)}")
            if base and base["rps"]:
                ratio = rps_ratio(r, base)
                yield f"req/s ÷ {node} ≥ {floor}×", name, ratio, ratio >= floor
                p99 = paired(r, base, lambda a, b: a["p99_ms"] / b["p99_ms"])
                yield f"p99 ÷ {node}'s p99 < 1", name, p99, p99 < 1


def _home_cpu(by_name):
    for name, r in by_name.items():
        if HOME.fullmatch(name) and name.endswith("-0ms-c64") and r["cpu_us_per_req"]:
            yield "CPU µs/req ≤ 60", name, r["cpu_us_per_req"], r["cpu_us_per_req"] <= 60


def _added_latency(by_name):
    direct = by_name.get("direct-users-20ms-c8")
    for name in ("mobile-home-20ms-c8", "mobile-home-h2c-20ms-c8"):
        if direct and name in by_name:
            added = paired(by_name[name], direct, lambda a, b: a["p50_ms"] - b["p50_ms"])
            yield "p50 − direct p50 ≤ 0.5 ms", name, added, added <= 0.5


def _passthrough(by_name):
    for name, r in by_name.items():
        nginx = by_name.get("nginx-" + name.removeprefix("passthrough-"))
        if name.startswith("passthrough-") and nginx:
            ratio = rps_ratio(r, nginx)
            yield "req/s ÷ nginx ≥ 1", name, ratio, ratio >= 1
            cpu = paired(r, nginx, lambda a, b: a["cpu_us_per_req"] / b["cpu_us_per_req"])
            yield "CPU ÷ nginx CPU ≤ 1", name, cpu, cpu <= 1


def _policy_cost(by_name):
    for name, r in by_name.items():
        m = HOME.fullmatch(name)
        base = m and by_name.get(f"minimal-{m.group(2)}")
        if base and base["rps"]:
            ratio = rps_ratio(r, base)
            yield "req/s ÷ minimal BFF (no policies) ≥ 0.85", name, ratio, ratio >= 0.85


def _memory(by_name):
    for name, r in by_name.items():
        if r["target"] in OURS and r["connections"] == 64 and r["peak_rss_mb"]:
            yield "peak RSS MB < 24 (64 conns)", name, r["peak_rss_mb"], r["peak_rss_mb"] < 24
        if r["target"] in OURS and r["idle_rss_mb"]:
            yield "idle RSS MB < 16", name, r["idle_rss_mb"], r["idle_rss_mb"] < 16


TARGETS = [
    ("`/mobile/home` ≥ 12× seed Node, ≥ 4.5× tuned Node, lower p99", _home_vs_node),
    ("`/mobile/home` ≤ 60 µs CPU per request", _home_cpu),
    ("20 ms upstreams, 8 conns: p50 within 0.5 ms of a direct call", _added_latency),
    ("passthrough ≥ nginx req/s at ≤ nginx CPU", _passthrough),
    ("every policy together costs ≤ 15% of req/s", _policy_cost),
    ("BFF memory", _memory),
]


def check_targets(results):
    """Per target, per measure: every case's value and whether it met the target."""
    by_name = {r["case"]: r for r in results}
    checked = []
    for title, check in TARGETS:
        measures = {}
        for measure, case, value, met in check(by_name):
            measures.setdefault(measure, []).append({"case": case, "value": round(value, 3), "met": met})
        checked.append({"target": title, "measures": measures})
    return checked


def targets_table(checked):
    lines = ["| target | measure | range over cases (lowest … highest) | met |", "|---|---|---|---|"]
    for t in checked:
        if not t["measures"]:
            lines.append(f"| {t['target']} | – | not measured: its cases did not run | – |")
        for measure, rows in t["measures"].items():
            rows = sorted(rows, key=lambda row: row["value"])
            low, high = rows[0], rows[-1]
            spread = f"{low['value']:,.2f} ({low['case']})"
            if len(rows) > 1:
                spread += f" … {high['value']:,.2f} ({high['case']})"
            met = sum(row["met"] for row in rows)
            verdict = "yes" if met == len(rows) else f"**{met} of {len(rows)}**"
            lines.append(f"| {t['target']} | {measure} | {spread} | {verdict} |")
    return "\n".join(lines)


def with_before(cases, before, every=False):
    """Each BFF case preceded by its twin on the `before` build, which becomes one of its baselines
    (with `every`, also the cases of features some earlier builds lack)."""
    bffs = ("bff-mobile", "bff-web", "bff-partner")
    missing = [b for b in bffs if any(c.target == b for c in cases) and not os.path.exists(os.path.join(before, b))]
    if missing:
        raise SystemExit(f"--before {before}: no {', '.join(missing)} there (cargo build --release in that tree)")
    out = []
    for case in cases:
        # A TLS, several-instance or breaker case has no twin: a build from before those
        # features cannot run it.
        newer = not every and (case.tls or case.instances > 1 or any(
            word in key for key in case.env for word in ("BREAKER", "HEDGE", "COALESCE", "CACHE", "MAX_IN_FLIGHT_REQ", "RATE_LIMITS", "TRACING")))
        if case.target in bffs and not newer:
            twin = dataclasses.replace(case, name=f"{case.name}@before", target=f"{case.target}@before", baselines=())
            out.append(twin)
            case = dataclasses.replace(case, baselines=case.baselines + (twin.name,))
        out.append(case)
    return out


# === the fault matrix (--fault-matrix) ===

# Each fault on one upstream at a time, under load on /mobile/home: users is required, orders
# required, notifications optional. `down` points the BFF at a port nothing listens on.
MATRIX_PATH = "/mobile/home"
MATRIX_UPSTREAMS = ("users", "orders", "notifications")
MATRIX_FAULTS = (
    ("down", None),
    ("500s", {"error_rate": 1.0}),
    ("50% 500s", {"error_rate": 0.5}),
    ("10% 500s", {"error_rate": 0.1}),
    ("300 ms", {"latency_ms": 300}),
    ("hang", {"hang": True}),
    ("malformed", {"malformed": True}),
    ("reset", {"reset": True}),
    ("flapping", {"down_ms": 500, "up_ms": 1500}),
)
# Resilience off: one attempt, no breaker, no bulkhead. On: the shipped config.
RESILIENCE = (("off", {"BFF_DEFAULTS__RETRY__ATTEMPTS": "1", "BFF_DEFAULTS__BREAKER__ENABLED": "false",
                       "BFF_DEFAULTS__MAX_IN_FLIGHT": "0"}), ("on", {}))
STATUSES_LUA = os.path.join(ROOT, "bench", "baselines", "statuses.lua")
ATTEMPTS = re.compile(r'bff_upstream_(?:requests_total\{upstream="(\w+)",outcome="(\w+)"\}|retries_total\{upstream="(\w+)",outcome="retried"\}) (\d+)')


def upstream_attempts(metrics_text, upstream):
    """Attempts the BFF made to `upstream`: its calls that were sent (not refused by the breaker or
    the bulkhead) plus their retries."""
    total = 0
    for m in ATTEMPTS.finditer(metrics_text):
        name, outcome, retried, n = m.groups()
        if (name == upstream and outcome not in ("circuit_open", "overloaded")) or retried == upstream:
            total += int(n)
    return total


def run_fault(harness, upstream, fault, faults, mode, env):
    m = harness.mock
    for service in MATRIX_UPSTREAMS:
        http("DELETE", m[service] + "/_faults")
    if faults:
        http("PUT", m[upstream] + "/_faults", faults)
    admin = free_port()
    env = dict(env, BFF_SERVER__DRAIN_DELAY="0s", BFF_ADMIN__LISTEN=f"127.0.0.1:{admin}")
    if faults is None:
        env[f"BFF_UPSTREAMS__{upstream.upper()}__URL"] = f"http://127.0.0.1:{free_port()}"
    proc, port = harness.start_target("bff-mobile", env)
    wait_port(admin, proc, "bff-mobile admin")
    url = f"http://127.0.0.1:{port}{MATRIX_PATH}"
    wrk = harness.pinned(["wrk", "-t1"], "load") + ["-c64", "--latency", "-H", f"Authorization: Bearer {harness.token}"]
    subprocess.run(wrk + [f"-d{harness.args.warmup}s", url], capture_output=True, text=True, check=True)
    for service in MATRIX_UPSTREAMS:
        http("DELETE", m[service] + "/_stats")
    before = http("GET", f"http://127.0.0.1:{admin}/metrics")[2].decode()
    out = subprocess.run(wrk + ["-s", STATUSES_LUA, f"-d{harness.args.duration}s", url],
                         capture_output=True, text=True, check=True).stdout
    after = http("GET", f"http://127.0.0.1:{admin}/metrics")[2].decode()
    stats = {s: json.loads(http("GET", m[s] + "/_stats")[2]) for s in MATRIX_UPSTREAMS}
    harness.stop(proc)
    harness.procs.remove(proc)
    result = parse_wrk(out)
    statuses = dict(map(int, kv.split("=")) for line in out.splitlines() if line.startswith("STATUSES")
                    for kv in line.split()[1:])
    degraded = next((int(line.split()[1]) for line in out.splitlines() if line.startswith("DEGRADED")), 0)
    max_ms = next((float(line.split()[1]) for line in out.splitlines() if line.startswith("MAX_MS")), None)
    requests = result["requests"] or 1
    if faults is None:
        calls = upstream_attempts(after, upstream) - upstream_attempts(before, upstream)
    else:
        calls = stats[upstream]["requests"]
    healthy = [s for s in MATRIX_UPSTREAMS if s != upstream]
    return {
        "upstream": upstream, "fault": fault, "resilience": mode, "rps": result["rps"],
        "p99_ms": result["p99_ms"], "max_ms": max_ms, "statuses": statuses, "degraded": degraded,
        "ok_share": statuses.get(200, 0) / requests,
        "calls_per_req": calls / requests,
        "new_conns_per_req": sum(stats[s]["connections"] for s in healthy) / requests,
    }


# The onset of an outage (issue 25): users is healthy under load, then fails every call. Calls are
# counted from the switch: to the moment the breaker is seen open (the admin's metrics, polled
# every few milliseconds), and over the first second, against the client requests of that second.
MATRIX_ONSETS = (("500s onset", {"error_rate": 1.0}), ("malformed onset", {"malformed": True}))
CIRCUIT_OPEN = re.compile(r'bff_upstream_circuit_state\{upstream="(\w+)"\} 2')
ROUTE_REQUESTS = re.compile(r'bff_http_requests_total\{route="([^"]*)",[^}]*\} (\d+)')


def route_requests(metrics_text, route):
    return sum(int(n) for r, n in ROUTE_REQUESTS.findall(metrics_text) if r == route)


def run_onset(harness, upstream, fault, faults, env):
    m = harness.mock
    for service in MATRIX_UPSTREAMS:
        http("DELETE", m[service] + "/_faults")
    admin = free_port()
    env = dict(env, BFF_SERVER__DRAIN_DELAY="0s", BFF_ADMIN__LISTEN=f"127.0.0.1:{admin}")
    proc, port = harness.start_target("bff-mobile", env)
    wait_port(admin, proc, "bff-mobile admin")
    url = f"http://127.0.0.1:{port}{MATRIX_PATH}"
    metrics_url = f"http://127.0.0.1:{admin}/metrics"
    wrk = harness.pinned(["wrk", "-t1"], "load") + ["-c16", "--latency", "-H", f"Authorization: Bearer {harness.token}"]
    subprocess.run(wrk + [f"-d{harness.args.warmup}s", url], capture_output=True, text=True, check=True)
    calls = lambda: json.loads(http("GET", m[upstream] + "/_stats")[2])["requests"]
    load = subprocess.Popen(wrk + ["-s", STATUSES_LUA, f"-d{harness.args.duration}s", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(min(2.0, harness.args.duration / 3))  # healthy traffic at full load before the switch
        client0, calls0 = route_requests(http("GET", metrics_url)[2].decode(), MATRIX_PATH), calls()
        switched = time.monotonic()
        http("PUT", m[upstream] + "/_faults", faults)
        cut_ms = cut_calls = None
        while time.monotonic() - switched < 1.0:
            text = http("GET", metrics_url)[2].decode()
            if cut_ms is None and any(u == upstream for u in CIRCUIT_OPEN.findall(text)):
                cut_ms, cut_calls = 1000 * (time.monotonic() - switched), calls() - calls0
            time.sleep(0.002)
        second_calls = calls() - calls0
        second_clients = route_requests(http("GET", metrics_url)[2].decode(), MATRIX_PATH) - client0
        out, _ = load.communicate()
    finally:
        if load.poll() is None:
            load.kill()
        harness.stop(proc)
        harness.procs.remove(proc)
    result = parse_wrk(out)
    statuses = dict(map(int, kv.split("=")) for line in out.splitlines() if line.startswith("STATUSES")
                    for kv in line.split()[1:])
    return {
        "upstream": upstream, "fault": fault, "rps": result["rps"], "statuses": statuses,
        "cut_ms": cut_ms, "cut_calls": cut_calls, "second_calls": second_calls, "second_clients": second_clients,
        "calls_per_req_first_second": second_calls / max(second_clients, 1),
    }


def onset_table(rows):
    lines = ["| upstream | fault | cut off after (ms) | calls to the cut | calls in the first second | "
             "client requests in it | calls / request in it |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cut = "never" if r["cut_ms"] is None else f"{r['cut_ms']:.0f}"
        lines.append(f"| {r['upstream']} | {r['fault']} | {cut} | {r['cut_calls'] if r['cut_calls'] is not None else '–'} | "
                     f"{r['second_calls']} | {r['second_clients']} | {r['calls_per_req_first_second']:.3f} |")
    return "\n".join(lines)


def successes_per_second(row):
    """`200`s a second. In wrk's closed loop a fast failure is followed at once by the next
    request, so the share of `200`s falls as failures get faster (a breaker's `503`s), while the
    `200`s a second say what the clients got done."""
    total = sum(row["statuses"].values())
    return row["rps"] * row["statuses"].get(200, 0) / total if row["rps"] and total else None


def matrix_table(rows):
    lines = ["| upstream | fault | resilience | req/s | 200 (degraded) | 200s a second (vs off) | errors by status | "
             "p99 ms | max ms | upstream calls / req | new conns / req (healthy siblings) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    off = {(r["upstream"], r["fault"]): successes_per_second(r) for r in rows if r["resilience"] == "off"}
    for r in rows:
        ok = r["statuses"].get(200, 0)
        total = sum(r["statuses"].values()) or 1
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()) if k != 200) or "–"
        goodput, before = successes_per_second(r), off.get((r["upstream"], r["fault"]))
        versus = f" ({goodput / before:.2f}×)" if r["resilience"] != "off" and goodput and before else ""
        lines.append(
            f"| {r['upstream']} | {r['fault']} | {r['resilience']} | {fmt(r['rps'], 0)} | "
            f"{100 * ok / total:.2f}% ({r['degraded']}) | {fmt(goodput, 0)}{versus} | {errors} | "
            f"{fmt(r['p99_ms'], 1)} | {fmt(r['max_ms'], 0)} | {r['calls_per_req']:.3f} | {r['new_conns_per_req']:.4f} |")
    return "\n".join(lines)


def fault_matrix(args):
    harness = Harness(args)
    rows, onsets = [], []
    try:
        harness.start_mock()
        prefixes = tuple(args.only.split(",")) if args.only else ("",)
        for fault, faults in MATRIX_ONSETS:
            if f"users {fault}".startswith(prefixes):
                print(f"… users {fault}", file=sys.stderr, flush=True)
                env = dict(kv.split("=", 1) for kv in args.set or [])
                onsets.append(run_onset(harness, "users", fault, faults, env))
        for upstream in MATRIX_UPSTREAMS:
            for fault, faults in MATRIX_FAULTS:
                if not f"{upstream} {fault}".startswith(prefixes):
                    continue
                for mode, env in RESILIENCE:
                    if mode == "on":
                        env = dict(env, **dict(kv.split("=", 1) for kv in args.set or []))
                    print(f"… {upstream} {fault} resilience {mode}", file=sys.stderr, flush=True)
                    rows.append(run_fault(harness, upstream, fault, faults, mode, env))
    finally:
        harness.stop_all()
    out = write_results(args, "fault-matrix", {"machine": {"cores": os.cpu_count(), "duration_s": args.duration},
                                                "rows": rows, "onsets": onsets})
    if onsets:
        print(onset_table(onsets) + "\n")
    if rows:
        print(matrix_table(rows))
    print(f"\nraw results: {out}")


# === floods (--floods): what a hostile HTTP/2 client can make the BFF hold ===

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_get(path, headers=()):
    """A GET's header block as HPACK literals without indexing (RFC 7541 6.2.2), no Huffman."""
    block = b""
    for name, value in ((":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "bff"), *headers):
        name, value = name.encode(), value.encode()
        block += b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    return block


@dataclass
class Flood:
    """Connections that each open HTTP/2, ask `streams` times for `path` and then only read
    nothing (`zero_window`) or only ping every `ping_every` seconds."""

    name: str
    target: str
    path: str
    connections: int
    streams: int
    zero_window: bool = True
    ping_every: float = 0.0
    hold_s: int = 10
    env: dict = field(default_factory=dict)
    headers: tuple = ()
    credential: str = "none"


FLOODS = [
    # 400 × 100 streams of a 17 KB public document into a zero window: ~700 MB pinned before.
    Flood("zero-window-openapi", "bff-partner", "/v2/openapi.json", 400, 100),
    Flood("zero-window-healthz", "bff-mobile", "/healthz", 400, 100),
    # One request each, then a PING a second: the idle timeout (5 s here) must close them anyway.
    Flood("ping-keepalive", "bff-mobile", "/healthz", 1000, 1, zero_window=False, ping_every=1.0, hold_s=15,
          env={"BFF_SERVER__IDLE_TIMEOUT": "5s", "BFF_SERVER__MAX_CONNECTIONS": "1000"}),
]


def open_flood(port, flood, headers):
    """Opens one flood connection and sends its requests; the socket, non-blocking."""
    sock = socket.create_connection(("127.0.0.1", port))
    settings = (4).to_bytes(2, "big") + (0).to_bytes(4, "big") if flood.zero_window else b""
    out = H2_PREFACE + h2_frame(4, 0, 0, settings)
    block = hpack_get(flood.path, headers)
    for i in range(flood.streams):
        out += h2_frame(1, 0x5, 2 * i + 1, block)
    sock.sendall(out)
    sock.setblocking(False)
    return sock


def read_frames(sock, pending, counts):
    """Reads what `sock` has, counting the server's HEADERS and refused streams; False once closed."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            break
        except OSError:
            return False
        if not data:
            return False
        pending += data
    while len(pending) >= 9:
        length = int.from_bytes(pending[:3], "big")
        if len(pending) < 9 + length:
            break
        kind, payload = pending[3], bytes(pending[9:9 + length])
        del pending[:9 + length]
        if kind == 1:
            counts["answered"] += 1
        elif kind == 3 and payload[:4] == (7).to_bytes(4, "big"):
            counts["refused"] += 1
    return True


def run_flood(harness, flood):
    proc, port = harness.start_target(flood.target, {"BFF_SERVER__DRAIN_DELAY": "0s", **flood.env})
    pids = pids_of(proc.pid)
    headers = list(flood.headers)
    credential = {"bearer": f"Authorization: Bearer {harness.token}", "apikey": "X-Api-Key: demo-pro-key"}.get(flood.credential)
    url = f"http://127.0.0.1:{port}{flood.path}"
    # The plain case first: the same path under wrk at 64 connections, for the RSS it needs.
    wrk = harness.pinned(["wrk", "-t1"], "load") + ["-c64"] + (["-H", credential] if credential else [])
    subprocess.run(wrk + [f"-d{harness.args.warmup}s", url], capture_output=True, text=True, check=True)
    plain_peak = peak_rss_mb(pids)
    time.sleep(1)
    before = rss_mb(pids)
    socks, counts, buffers = [], {"answered": 0, "refused": 0}, []
    refused_connections = 0
    started = time.time()
    for _ in range(flood.connections):
        try:
            socks.append(open_flood(port, flood, tuple(h.split(": ", 1) for h in headers)))
            buffers.append(bytearray())
        except OSError:
            refused_connections += 1
    peak, open_at_end, next_ping = before, 0, time.time() + flood.ping_every
    while time.time() - started < flood.hold_s:
        alive = []
        for sock, pending in zip(socks, buffers):
            if read_frames(sock, pending, counts):
                alive.append((sock, pending))
            else:
                sock.close()
        socks, buffers = [a for a, _ in alive], [b for _, b in alive]
        if flood.ping_every and time.time() >= next_ping:
            next_ping += flood.ping_every
            for sock in socks:
                try:
                    sock.send(h2_frame(6, 0, 0, b"\0" * 8))
                except OSError:
                    pass
        peak = max(peak, rss_mb(pids))
        time.sleep(0.2)
    open_at_end = len(socks)
    # Can a well-behaved client still get in?
    status, _, _ = http("GET", f"http://127.0.0.1:{port}/healthz")
    for sock in socks:
        sock.close()
    closed = time.time()
    after = {}
    while time.time() - closed < 30:
        time.sleep(1)
        after[round(time.time() - closed)] = rss_mb(pids)
    back_within = next((t for t, rss in sorted(after.items()) if rss <= before * 1.25), None)
    harness.stop(proc)
    harness.procs.remove(proc)
    return {
        "flood": flood.name, "target": flood.target, "path": flood.path, "connections": flood.connections,
        "streams": flood.streams, "ping_every": flood.ping_every, "plain_peak_rss_mb": plain_peak, "before_rss_mb": before, "peak_rss_mb": peak,
        "after_30s_rss_mb": after.get(30, rss_mb(pids)) if after else None, "back_within_25pct_s": back_within,
        "answered": counts["answered"], "refused_streams": counts["refused"],
        "connections_refused": refused_connections, "open_at_end": open_at_end, "served_during": status == 200,
    }


# What issue 19 asks of a flood: at most this much above the RSS before it, back within 25% of
# that in 30 s, and no flood connection left open once the idle timeout has passed.
FLOOD_MAX_GROWTH_MB = 64


def flood_met(r):
    """Whether a flood row meets the targets, and the first one it misses."""
    if r["peak_rss_mb"] - r["before_rss_mb"] > FLOOD_MAX_GROWTH_MB:
        return False, f"peak +{fmt(r['peak_rss_mb'] - r['before_rss_mb'])} MB > +{FLOOD_MAX_GROWTH_MB} MB"
    if r["back_within_25pct_s"] is None:
        return False, "not back within 25% in 30 s"
    if r["ping_every"] and r["open_at_end"]:
        return False, f"{r['open_at_end']} pinging connections still open"
    if not r["served_during"]:
        return False, "a plain client was refused during the flood"
    return True, "met"


def flood_table(rows):
    lines = ["| flood | target | conns × streams | plain case peak RSS MB | RSS before | peak (Δ) | 30 s after | "
             "back within 25% | streams answered / refused | conns open at the end | served during | targets |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        back = "–" if r["back_within_25pct_s"] is None else f"{r['back_within_25pct_s']} s"
        met = flood_met(r)[1]
        lines.append(
            f"| {r['flood']} | {r['target']} {r['path']} | {r['connections']} × {r['streams']} | "
            f"{fmt(r['plain_peak_rss_mb'])} | {fmt(r['before_rss_mb'])} | {fmt(r['peak_rss_mb'])} "
            f"(+{fmt(r['peak_rss_mb'] - r['before_rss_mb'])}) | {fmt(r['after_30s_rss_mb'])} | {back} | "
            f"{r['answered']:,} / {r['refused_streams']:,} | {r['open_at_end']} | {'yes' if r['served_during'] else 'no'} | "
            f"{met} |")
    return "\n".join(lines)


def floods(args):
    harness = Harness(args)
    rows = []
    try:
        harness.start_mock()
        prefixes = tuple(args.only.split(",")) if args.only else ("",)
        for flood in FLOODS:
            if not flood.name.startswith(prefixes):
                continue
            # With --before, the same flood against the earlier build first.
            twins = [dataclasses.replace(flood, name=f"{flood.name}@before", target=f"{flood.target}@before")] if args.before else []
            for run in twins + [flood]:
                print(f"… {run.name}", file=sys.stderr, flush=True)
                rows.append(run_flood(harness, run))
    finally:
        harness.stop_all()
    out = write_results(args, "floods", {"machine": {"cores": os.cpu_count()}, "rows": rows})
    print(flood_table(rows))
    ours = [r for r in rows if not r["flood"].endswith("@before")]
    print(f"\ntargets (peak ≤ +{FLOOD_MAX_GROWTH_MB} MB, back within 25% in 30 s, pinging connections closed, "
          f"a plain client served): {sum(flood_met(r)[0] for r in ours)} of {len(ours)} floods met them")
    print(f"raw results: {out}")


# === scale-out (--scale-out): replicas behind nginx, restarted in turn under load ===

SCALE_OUT_REPLICAS = 3
SCALE_OUT_PATH = "/mobile/home"
# nginx's fail_timeout (2 s: how long a replica that refused a connection is left alone) and 1 s.
SCALE_OUT_MIN_READY_S = 3


class Replica:
    """One bff-mobile (or bff-web) replica on fixed ports, so a restart comes back where nginx
    sends."""

    def __init__(self, harness, name, env, index):
        self.harness, self.name, self.env, self.index = harness, name, env, index
        self.port, self.admin = free_port(), free_port()
        self.proc = None

    def start(self):
        env = dict(self.env, BFF_ADMIN__LISTEN=f"127.0.0.1:{self.admin}")
        self.proc, _ = self.harness.start_target(self.name, env, port=self.port)
        deadline = time.time() + 30
        while time.time() < deadline:
            # The admin listener may open a moment after the main one: refused is not ready yet.
            try:
                status, _, _ = http("GET", f"http://127.0.0.1:{self.admin}/readyz")
            except urllib.error.URLError:
                status = None
            if status == 200:
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"replica {self.index} of {self.name} exited with {self.proc.returncode}; see its log")
            time.sleep(0.05)
        raise SystemExit(f"replica {self.index} of {self.name} not ready within 30 s")

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig`, then waits for the process to exit (a SIGTERM drains first)."""
        os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=60)
        self.harness.procs.remove(self.proc)


def start_lb(harness, replicas):
    port = free_port()
    prefix = tempfile.mkdtemp(prefix="nginx-lb-", dir=harness.logs)
    with open(os.path.join(ROOT, "bench", "baselines", "nginx-replicas.conf.template")) as f:
        conf = f.read()
    servers = "\n".join(f"        server 127.0.0.1:{r.port} max_fails=1 fail_timeout=2s;" for r in replicas)
    conf = conf.replace("{port}", str(port)).replace("{servers}", servers)
    conf = conf.replace("{workers}", "1").replace("{prefix}", prefix)
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    proc = harness.spawn("nginx-lb", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", path, "-p", prefix], role="load")
    wait_port(port, proc, "nginx")
    return port


def token(harness, sub, ttl_s=3600):
    status, _, body = http("POST", harness.mock["auth"] + "/token", {"sub": sub, "scope": "profile orders", "ttl_s": ttl_s})
    if status != 200:
        raise SystemExit(f"services-mock: POST /token answered {status}")
    return json.loads(body)["access_token"]


def wrk_through(harness, port, seconds, extra=()):
    cmd = ["wrk", "-t1", "-c32", "--latency", "-s", STATUSES_LUA, "-H", f"Authorization: Bearer {harness.token}",
           f"-d{seconds}s", *extra, f"http://127.0.0.1:{port}{SCALE_OUT_PATH}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def scale_out(args):
    """Three bff-mobile replicas sharing one Redis behind nginx: load before, load during a rolling
    restart (each replica SIGTERMed, waited for, started again, waited for /readyz), a per-user
    limit counted across the replicas and a restart, a browser session on two bff-web replicas
    across a restart, and one replica SIGKILLed under load."""
    harness = Harness(args)
    report = {}
    rollout_s = 15 if args.quick else 60
    try:
        harness.start_mock()
        _, redis_url = harness.start_redis()
        # Drains as deployed (server.drain_delay), shorter in the quick run so that three restarts
        # fit in its 15 s.
        env = {
            "BFF_REDIS__URL": redis_url,
            "BFF_SERVER__DRAIN_DELAY": "1s" if args.quick else "5s",
            "BFF_RATE_LIMITS__ORDERS__KEY": "user",
            "BFF_RATE_LIMITS__ORDERS__RATE": "10",
            "BFF_RATE_LIMITS__ORDERS__PER": "1h",
            "BFF_RATE_LIMITS__ORDERS__ROUTES": '["/mobile/orders/{id}"]',
        }
        replicas = [Replica(harness, "bff-mobile", env, i) for i in range(SCALE_OUT_REPLICAS)]
        for replica in replicas:
            replica.start()
        lb = start_lb(harness, replicas)
        print("… steady load", file=sys.stderr, flush=True)
        before = parse_wrk(wrk_through(harness, lb, 5 if args.quick else 15).communicate()[0])
        print(f"… rolling restart under {rollout_s} s of load", file=sys.stderr, flush=True)
        load = wrk_through(harness, lb, rollout_s)
        started = time.time()
        restarts = []
        time.sleep(1)
        # Every replica in turn, again while another whole round fits in the load's time.
        while True:
            round_started = time.time()
            for replica in replicas:
                t0 = time.time()
                replica.stop(signal.SIGTERM)
                stopped = time.time()
                replica.start()
                restarts.append({"replica": replica.index, "drain_s": stopped - t0, "back_s": time.time() - stopped})
                # Ready, then taken back by nginx once its fail_timeout has passed (Kubernetes'
                # minReadySeconds): only then is the next replica taken away.
                time.sleep(SCALE_OUT_MIN_READY_S)
            if time.time() + (time.time() - round_started) + 1 > started + rollout_s:
                break
        out = load.communicate()[0]
        during = parse_wrk(out)
        statuses = {int(k): int(v) for line in out.splitlines() if line.startswith("STATUSES")
                    for k, v in (kv.split("=") for kv in line.split()[1:])}
        report["rollout"] = {"before": before, "during": during, "restarts": restarts, "statuses": statuses}

        # A per-user limit of 10 an hour, counted in Redis by every replica, across a restart.
        user = token(harness, "7")
        url = f"http://127.0.0.1:{lb}/mobile/orders/701"
        codes = [http("GET", url, headers={"Authorization": f"Bearer {user}"})[0] for _ in range(6)]
        replicas[0].stop(signal.SIGTERM)
        replicas[0].start()
        codes += [http("GET", url, headers={"Authorization": f"Bearer {user}"})[0] for _ in range(9)]
        report["limit"] = {"limit": 10, "ok": codes.count(200), "limited": codes.count(429), "other": len(codes) - codes.count(200) - codes.count(429)}

        # A browser session made on one bff-web replica, valid on the other after its restart.
        web_env = {"BFF_REDIS__URL": redis_url, "BFF_SESSION__STORE": "redis", "BFF_SERVER__DRAIN_DELAY": "0s"}
        web = [Replica(harness, "bff-web", web_env, i) for i in range(2)]
        for replica in web:
            replica.start()
        cookie = sign_in(web[0].port)
        web[0].stop(signal.SIGTERM)
        web[0].start()
        seen = [no_redirect(f"http://127.0.0.1:{r.port}/bff/user",
                            {"Cookie": f"__Host-bff-session={cookie}", "X-CSRF": "1"})[0] for r in web]
        report["session"] = {"statuses_after_restart": seen}
        for replica in web:
            replica.stop(signal.SIGTERM)

        # One replica killed outright under load: failures per second of 1-second wrk runs.
        print("… SIGKILL under load", file=sys.stderr, flush=True)
        seconds = 8 if args.quick else 20
        per_second = []
        for second in range(seconds):
            if second == 2:
                replicas[1].stop(signal.SIGKILL)
            if second == seconds // 2:
                replicas[1].start()
            result = parse_wrk(wrk_through(harness, lb, 1).communicate()[0])
            per_second.append({"second": second, "requests": result["requests"], "errors": result["errors"]})
        report["sigkill"] = per_second
    finally:
        harness.stop_all()
    out_path = write_results(args, "scale-out", {"machine": {"cores": os.cpu_count()}, "quick": args.quick, **report})
    r = report["rollout"]
    b, d = r["before"], r["during"]
    print(f"| phase | req/s | p50 ms | p99 ms | non-2xx + socket errors |")
    print(f"|---|---|---|---|---|")
    print(f"| steady, 3 replicas | {b['rps']:,.0f} | {fmt(b['p50_ms'])} | {fmt(b['p99_ms'])} | {b['errors']} |")
    print(f"| rolling restart ({len(r['restarts'])} restarts in {rollout_s} s) | {d['rps']:,.0f} | {fmt(d['p50_ms'])} | "
          f"{fmt(d['p99_ms'])} | {d['errors']} |")
    drains = ", ".join(f"{x['drain_s']:.1f}+{x['back_s']:.1f}" for x in r["restarts"])
    print(f"\nrestarts (drain + back to ready, s): {drains}; statuses during: {r['statuses']}")
    lim = report["limit"]
    print(f"per-user limit of {lim['limit']} across replicas and a restart: {lim['ok']} allowed, {lim['limited']} limited, {lim['other']} other")
    print(f"session made on one bff-web replica, after its restart, on each: {report['session']['statuses_after_restart']}")
    kill = report["sigkill"]
    failed = [k for k in kill if k["errors"]]
    print(f"SIGKILL of one replica at second 2 (started again at {len(kill) // 2}): "
          f"{sum(k['errors'] for k in kill)} failed of {sum(k['requests'] for k in kill):,}, in {len(failed)} second(s) "
          f"{[k['second'] for k in failed]}")
    ok = (d["errors"] == 0 and b["errors"] == 0 and lim["ok"] == lim["limit"] and lim["other"] == 0
          and all(s == 200 for s in report["session"]["statuses_after_restart"]))
    print(f"\ntargets (0 errors across the rollout, the limit exact, the session everywhere): {'met' if ok else 'NOT met'}")
    print(f"raw results: {out_path}")
    if not ok:
        raise SystemExit(1)


# === transfers (--transfers): a large download and upload through the BFF, next to nginx ===

TRANSFER_BYTES = 256 * 1024 * 1024


def curl_transfer(args_list):
    """Runs curl with `args_list`; (bytes per second, seconds)."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{speed_upload} %{time_total} %{http_code}"]
                         + args_list, capture_output=True, text=True, check=True).stdout.split()
    down, up, total, code = float(out[0]), float(out[1]), float(out[2]), out[3]
    if code != "200":
        raise SystemExit(f"curl {' '.join(args_list)} answered {code}")
    return max(down, up), total


def transfers(args):
    """256 MiB down and up through bff-web's passthrough routes and through nginx, rounds
    alternating; each target fresh per transfer, so its VmHWM is that transfer's peak."""
    harness = Harness(args)
    rows = []
    upload = os.path.join(harness.logs, "upload.bin")
    with open(upload, "wb") as f:
        block = bytes(range(256)) * 4096
        for _ in range(TRANSFER_BYTES // len(block)):
            f.write(block)
    try:
        harness.start_mock()
        for round_ in range(args.repeat):
            for kind in ("download", "upload"):
                for target in ("nginx", "bff-web"):
                    print(f"… {target} {kind} (round {round_ + 1} of {args.repeat})", file=sys.stderr, flush=True)
                    proc, port = harness.start_target(target, {})
                    pids = pids_of(proc.pid)
                    before = rss_mb(pids)
                    if kind == "download":
                        rate, seconds = curl_transfer([f"http://127.0.0.1:{port}/api/catalog/files/{TRANSFER_BYTES}"])
                    else:
                        auth = ["-H", f"Authorization: Bearer {harness.token}"] if target == "bff-web" else []
                        rate, seconds = curl_transfer(["-X", "PUT", "-T", upload, "-H", "Expect:"] + auth
                                                      + [f"http://127.0.0.1:{port}/api/uploads"])
                    rows.append({"round": round_, "kind": kind, "target": target, "mb_per_s": rate / 1e6,
                                 "seconds": seconds, "before_rss_mb": before, "peak_rss_mb": peak_rss_mb(pids)})
                    harness.stop(proc)
                    harness.procs.remove(proc)
    finally:
        harness.stop_all()
    out = write_results(args, "transfers", {"machine": {"cores": os.cpu_count()}, "rows": rows})
    lines = ["| transfer (256 MiB) | nginx MB/s | bff-web MB/s | bff-web ÷ nginx (median of rounds) | bff-web peak RSS MB (before) | nginx peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for kind in ("download", "upload"):
        pick = lambda target: [r for r in rows if r["kind"] == kind and r["target"] == target]
        nginx, bff = pick("nginx"), pick("bff-web")
        ratios = sorted(b["mb_per_s"] / n["mb_per_s"] for n, b in zip(nginx, bff))
        median = lambda xs: sorted(xs)[len(xs) // 2]
        lines.append(f"| {kind} | {fmt(median([r['mb_per_s'] for r in nginx]))} | {fmt(median([r['mb_per_s'] for r in bff]))} | "
                     f"{ratios[len(ratios) // 2]:.2f}× | {fmt(max(r['peak_rss_mb'] for r in bff))} "
                     f"({fmt(median([r['before_rss_mb'] for r in bff]))}) | {fmt(max(r['peak_rss_mb'] for r in nginx))} |")
    print("\n".join(lines))
    met = all(r["peak_rss_mb"] < 64 for r in rows if r["target"] == "bff-web")
    print(f"\ntargets: throughput ≥ 0.8× nginx's, the BFF's peak RSS < 64 MiB: RSS {'met' if met else 'NOT met'}")
    print(f"raw results: {out}")


# === the soak (--soak SECONDS) ===

# 256 connections over four kinds of request, each BFF with every shipped policy plus a per-user
# limit and quotas counted in one Redis, spans exported at 1%: notifications flaps all along
# (an optional part: pages degrade, they do not fail), and Redis is killed and started again at
# the half-way mark.
SOAK_LOADS = (  # (BFF, path, credential, connections)
    ("bff-mobile", "/mobile/home", "bearer", 96),
    ("bff-web", "/web/home", "bearer", 64),
    ("bff-partner", "/v2/products/SKU-0007", "apikey", 48),
    ("bff-web", "/api/catalog/products/SKU-0007", "none", 48),
)
SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def soak_window(harness, ports, pids, seconds):
    """Each load of SOAK_LOADS for `seconds`, all at once; per load: requests, errors, p99; and
    each BFF's RSS and open fds half-way through, under the load."""
    procs = []
    for name, path, credential, conns in SOAK_LOADS:
        headers = {"bearer": ["-H", f"Authorization: Bearer {harness.token}"],
                   "apikey": ["-H", "X-Api-Key: demo-pro-key"], "none": []}[credential]
        cmd = ["wrk", "-t1", f"-c{conns}", "--latency", "-s", STATUSES_LUA, f"-d{seconds}s", "--timeout", "10s",
               *headers, f"http://127.0.0.1:{ports[name]}{path}"]
        procs.append(subprocess.Popen(harness.pinned(cmd, "load"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    time.sleep(seconds / 2)
    sample = {"rss_mb": {n: round(rss_mb([p]), 1) for n, p in pids.items()},
              "fds": {n: open_fds(p) for n, p in pids.items()}}
    loads = []
    for (name, path, _, _), proc in zip(SOAK_LOADS, procs):
        out, _ = proc.communicate()
        result = parse_wrk(out)
        statuses = dict(map(int, kv.split("=")) for line in out.splitlines() if line.startswith("STATUSES")
                        for kv in line.split()[1:])
        socket = SOCKET_ERRORS.search(out)
        loads.append({"path": path, "requests": result["requests"], "rps": result["rps"], "p99_ms": result["p99_ms"],
                      "non_2xx": sum(n for status, n in statuses.items() if not 200 <= status < 300),
                      "socket_errors": sum(int(x) for x in socket.groups()) if socket else 0})
    return loads, sample


def soak(args):
    harness = Harness(args)
    window = min(60, max(5, args.soak // 10))
    minutes = max(2, args.soak // window)
    rows = []
    try:
        harness.start_mock()
        # Optional everywhere it is called: a flapping notifications degrades pages, never fails them.
        http("PUT", harness.mock["notifications"] + "/_faults", {"down_ms": 500, "up_ms": 1500})
        redis_proc, redis_url = harness.start_redis()
        redis_cmd = list(redis_proc.args)
        redis_cmd = redis_cmd[3:] if redis_cmd[0] == "taskset" else redis_cmd
        env = {"BFF_REDIS__URL": redis_url, **PER_USER, **otlp(0.01)}
        ports, pids = {}, {}
        for name in dict.fromkeys(name for name, *_ in SOAK_LOADS):
            target_env = {k: v for k, v in env.items() if name != "bff-partner" or not k.startswith("BFF_RATE_LIMITS__PER_USER")}
            proc, port = harness.start_target(name, target_env)
            ports[name], pids[name] = port, proc.pid
        print(f"soak: {minutes} windows of {window} s, 256 connections", file=sys.stderr, flush=True)
        for minute in range(1, minutes + 1):
            restart = None
            if minute == minutes // 2 + 1:
                # Redis killed at the start of this window and started again 2 s later on its port.
                def restart_redis():
                    time.sleep(1)
                    os.killpg(redis_proc.pid, signal.SIGKILL)
                    redis_proc.wait()
                    time.sleep(2)
                    harness.spawn("redis-restarted", redis_cmd, role="load")
                restart = threading.Thread(target=restart_redis)
                restart.start()
            loads, sample = soak_window(harness, ports, pids, window)
            if restart:
                restart.join()
            row = {"window": minute, "loads": loads, "redis_restarted": restart is not None, **sample}
            rows.append(row)
            print(soak_table([row], header=minute == 1), flush=True)
    finally:
        harness.stop_all()
    verdict = soak_verdict(rows)
    out = write_results(args, "soak", {"machine": {"cores": os.cpu_count()}, "window_s": window, "rows": rows,
                                       "verdict": verdict})
    print("\n" + soak_table(rows))
    for line in verdict["lines"]:
        print(line)
    print(f"\nraw results: {out}")
    if not verdict["ok"]:
        sys.exit(1)


def soak_table(rows, header=True):
    names = list(dict.fromkeys(name for name, *_ in SOAK_LOADS))
    lines = []
    if header:
        lines += ["| window | req/s | p99 ms (worst load) | non-2xx | socket errors | "
                  + " | ".join(f"{n} RSS MB / fds" for n in names) + " |",
                  "|---|---|---|---|---|" + "---|" * len(names)]
    for r in rows:
        loads = r["loads"]
        p99 = max((l["p99_ms"] or 0) for l in loads)
        cells = " | ".join(f"{r['rss_mb'][n]} / {r['fds'][n]}" for n in names)
        mark = " (Redis restarted)" if r["redis_restarted"] else ""
        lines.append(f"| {r['window']}{mark} | {fmt(sum(l['rps'] for l in loads), 0)} | {fmt(p99, 1)} | "
                     f"{sum(l['non_2xx'] for l in loads)} | {sum(l['socket_errors'] for l in loads)} | {cells} |")
    return "\n".join(lines)


def soak_verdict(rows):
    """RSS and fds flat after warm-up (every window of the last half within ±5% of their mean), no
    socket error, the last window's p99 within 1.5× the first's."""
    lines, ok = [], True
    half = rows[len(rows) // 2:]
    for name in rows[0]["rss_mb"]:
        for key, unit in (("rss_mb", "MB"), ("fds", "fds")):
            values = [r[key][name] for r in half if r[key][name] is not None]
            mean = sum(values) / len(values)
            spread = max(abs(v - mean) / mean for v in values) if mean else 0
            flat = spread <= 0.05 or (key == "fds" and max(values) - min(values) <= 2)
            ok &= flat
            lines.append(f"{'ok' if flat else 'FAIL'}: {name} {unit} over the last half {min(values)}–{max(values)} "
                         f"(±{100 * spread:.1f}% of {mean:.1f})")
    errors = sum(l["socket_errors"] for r in rows for l in r["loads"])
    ok &= errors == 0
    lines.append(f"{'ok' if errors == 0 else 'FAIL'}: {errors} socket errors")
    first = max((l["p99_ms"] or 0) for l in rows[0]["loads"])
    last = max((l["p99_ms"] or 0) for l in rows[-1]["loads"])
    steady = last <= 1.5 * first
    ok &= steady
    lines.append(f"{'ok' if steady else 'FAIL'}: p99 of the last window {last:.1f} ms, of the first {first:.1f} ms "
                 f"({last / first if first else 0:.2f}×)")
    return {"ok": ok, "lines": lines}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds per case, a subset of cases (CI)")
    parser.add_argument("--only", help="run the cases whose name starts with one of these (comma-separated)")
    parser.add_argument("--duration", type=int, help="seconds of measurement per case (default 10, quick 2)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per case (default 3, quick 1)")
    parser.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all cases; each case's median run (by req/s) is reported, and each comparison with a baseline is the median of the rounds' comparisons")
    parser.add_argument("--pin", action="store_true", help="process under test on core 1, mock and wrk on core 0 (steadier CPU figures)")
    parser.add_argument("--counts", action="store_true",
                        help="also count mallocs and system calls per request (perf uprobe; needs perf and root)")
    parser.add_argument("--callgrind", action="store_true",
                        help="count user-space instructions per request with callgrind instead of timing (our Rust targets; use few connections, e.g. the -c8 cases)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs (a temporary directory, otherwise removed unless the run fails)")
    parser.add_argument("--out", help="where to write the JSON results (default bench/results/<utc>.json)")
    parser.add_argument("--before", metavar="DIR",
                        help="release binaries of an earlier build: each BFF case also runs on them, just before, "
                             "as `<case>@before`, and is compared with that run (an A/B in one run)")
    parser.add_argument("--before-every", action="store_true",
                        help="with --before, twin the TLS, several-instance, breaker, cache, limit and tracing cases "
                             "too (the earlier build must have those features)")
    parser.add_argument("--fault-matrix", action="store_true",
                        help="instead of the cases: each fault on users, orders and notifications under load on "
                             "/mobile/home, with resilience off and on (bench/README.md); --only \"users flap\" "
                             "picks rows by `<upstream> <fault>` prefix")
    parser.add_argument("--set", action="append", metavar="BFF_KEY=VALUE",
                        help="with --fault-matrix: config for the resilience-on runs, e.g. "
                             "BFF_DEFAULTS__BREAKER__OPEN_FOR=1s (repeatable)")
    parser.add_argument("--transfers", action="store_true",
                        help="instead of the cases: 256 MiB down and up through bff-web's passthrough routes and "
                             "through nginx, with the BFF's peak RSS (--repeat rounds)")
    parser.add_argument("--scale-out", action="store_true",
                        help="instead of the cases: three bff-mobile replicas and one Redis behind nginx, each "
                             "replica restarted in turn under 60 s of load (15 s with --quick), then a per-user "
                             "limit across replicas, a session across bff-web replicas, and one replica SIGKILLed "
                             "(bench/README.md); exits 1 when a request failed during the rollout")
    parser.add_argument("--floods", action="store_true",
                        help="instead of the cases: HTTP/2 floods (zero windows, pings and no requests) against "
                             "the BFFs, reporting RSS before, at peak and 30 s after (bench/README.md); with "
                             "--before, each also against the earlier build")
    parser.add_argument("--soak", type=int, metavar="SECONDS",
                        help="instead of the cases: SECONDS of mixed load (mobile, web, partner, a passthrough "
                             "route; 256 connections) on every policy, a flapping upstream and a Redis restart "
                             "half-way, with RSS, fds, p99 and errors per window (bench/README.md); exits 1 "
                             "when memory or fds grow, a socket error occurs or p99 drifts")
    args = parser.parse_args()
    if args.soak:
        if not args.no_build:
            build()
        soak(args)
        return
    if args.transfers:
        if not args.no_build:
            build()
        transfers(args)
        return
    if args.scale_out:
        if not args.no_build:
            build()
        scale_out(args)
        return
    if args.floods:
        args.warmup = args.warmup or 3
        if not args.no_build:
            build()
        floods(args)
        return
    if args.fault_matrix:
        args.duration = args.duration or 5
        args.warmup = args.warmup or 2
        if not args.no_build:
            build()
        fault_matrix(args)
        return
    args.duration = args.duration or (2 if args.quick else 10)
    args.warmup = args.warmup or (1 if args.quick else 3)

    for tool in ("wrk", "node"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (apt-get install wrk nodejs); see bench/README.md")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
        raise SystemExit(f"the Node baselines' packages are missing: run `npm ci` in {NODE_DIR}")
    prefixes = tuple(args.only.split(",")) if args.only else ("",)
    cases = [c for c in CASES if (c.quick or not args.quick) and c.name.startswith(prefixes)]
    if args.before:
        cases = with_before(cases, args.before, args.before_every)
    if any(c.target == "nginx" for c in cases) and not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        raise SystemExit("nginx is not installed (apt-get install nginx-light)")
    if args.counts:
        malloc_probe()
    if not args.no_build:
        build()

    harness = Harness(args)
    results = []
    try:
        harness.start_mock()
        # Repeats go in rounds over all cases, not back to back: a disturbance on a shared machine
        # (a noisy neighbour for a minute) then hits one run of many cases, which the median
        # drops, instead of every run of one case and none of its baselines.
        runs = {case.name: [] for case in cases}
        for round_ in range(args.repeat):
            for case in cases:
                suffix = f" (round {round_ + 1} of {args.repeat})" if args.repeat > 1 else ""
                print(f"… {case.name}{suffix}", file=sys.stderr, flush=True)
                runs[case.name].append(harness.run_case(case))
        for case in cases:
            # The run with the median req/s stands for the case; all runs stay in the JSON, in round
            # order, for the comparisons with baselines round by round (`paired`).
            case_runs = runs[case.name]
            median = dict(sorted(case_runs, key=lambda r: r["rps"])[len(case_runs) // 2])
            median["runs"] = [
                {k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "redis_cpu_us_per_req", "redis_checks_per_call", "errors")} for r in case_runs
            ]
            results.append(median)
    finally:
        harness.stop_all()

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or os.path.join(ROOT, "bench", "results", f"{started}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    machine = {"cores": os.cpu_count(), "kernel": os.uname().release, "quick": args.quick, "duration_s": args.duration}
    checked = [] if args.callgrind else check_targets(results)
    with open(out, "w") as f:
        json.dump({"machine": machine, "results": results, "targets": checked}, f, indent=2)
    print(table(results))
    print()
    print(targets_table(checked))
    print(f"\nraw results: {out}")
    # A baseline that errors under load is a finding; one of ours that does is a failure.
    ours = ("bff-mobile", "bff-web", "bff-partner", "minimal", "minimal-proxy")
    failed = [r["case"] for r in results if not r["requests"] or (r["errors"] and r["target"] in ours)]
    if failed:
        raise SystemExit(f"cases with errors or no requests: {', '.join(failed)}")


# Set when the run ends in an error: its logs are kept.
FAILED = False

if __name__ == "__main__":
    try:
        main()
    except BaseException as e:
        FAILED = not (isinstance(e, SystemExit) and e.code in (None, 0))
        raise
