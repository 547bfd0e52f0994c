"""`helm test` of a cardano-forge release: every forge manager answers, and one node forges.

Run by templates/tests/release-test.yaml in the forge manager's image (its Python and its
Kubernetes client).
For every pod of the StatefulSet (through the headless Service's DNS names): /health and
/startup-status answer 200 and /metrics is readable. Then who forges (`cardano_forging_enabled`):
never two pods of this release at once; without cluster management exactly one; with it, the pod
the pool-wide Lease names when its holder is this region, none otherwise (so the tests of all of
a pool's releases together prove exactly one forger per pool). A hand-over in progress is waited
for, up to RELEASE_TEST_TIMEOUT seconds; two forgers fail at once.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"release test: {name} is not set (the chart's test hook sets it)")
    return value


def get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http://)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def forging(metrics: str) -> bool:
    for line in metrics.splitlines():
        if line.startswith("cardano_forging_enabled"):
            return float(line.rsplit(" ", 1)[1]) == 1.0
    raise ValueError("no cardano_forging_enabled sample")


def pool_lease_holder(namespace: str, name: str) -> str:
    """The pool-wide Lease's holder (`<region>/<pod>`), "" when vacant, read as this release's
    ServiceAccount from this cluster's API, or with COORDINATION_KUBECONFIG from the shared one."""
    from kubernetes import client, config  # noqa: PLC0415 (in the forge manager's image)

    kubeconfig = os.environ.get("COORDINATION_KUBECONFIG")
    if kubeconfig:
        api = config.new_client_from_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
        api = client.ApiClient()
    with api:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(
            name, namespace, _request_timeout=5
        )
    return str(lease.spec.holder_identity or "") if lease.spec else ""


def check_once() -> tuple[list[str], list[str]]:
    """Problems found, and the pods that forge."""
    pods = env("PODS").split(",")
    domain = os.environ.get("POD_DOMAIN", "")  # empty: the pod names are host names
    port = env("MANAGER_PORT")
    problems: list[str] = []
    forgers: list[str] = []
    for pod in pods:
        base = f"http://{pod}.{domain}:{port}" if domain else f"http://{pod}:{port}"
        for path in ("/health", "/startup-status"):
            status, body = get(base + path)
            if status != 200:
                problems.append(f"{pod}{path} answered {status or 'nothing'}: {body[:200]}")
        status, body = get(base + "/metrics")
        if status != 200:
            problems.append(f"{pod}/metrics answered {status or 'nothing'}")
            continue
        try:
            if forging(body):
                forgers.append(pod)
        except ValueError as exc:
            problems.append(f"{pod}/metrics: {exc}")
    if len(forgers) > 1:
        print(f"FAIL: {len(forgers)} pods of this release forge at once: {', '.join(forgers)}")
        sys.exit(1)
    region = env("REGION")
    lease_name = os.environ.get("POOL_LEASE_NAME", "")
    if not lease_name:
        if len(forgers) != 1:
            problems.append(f"no pod of this release forges (of {', '.join(pods)})")
        return problems, forgers
    holder = pool_lease_holder(env("COORDINATION_NAMESPACE"), lease_name)
    holder_region, _, holder_pod = holder.partition("/")
    expected = [holder_pod] if holder_region == region else []
    if forgers != expected:
        problems.append(
            f"pool-wide Lease held by {holder or 'nobody'}, so {expected or 'no pod'} of region "
            f"{region} should forge; forging: {forgers or 'none'}"
        )
    return problems, forgers


def main() -> int:
    timeout = float(os.environ.get("RELEASE_TEST_TIMEOUT", "120"))
    deadline = time.monotonic() + timeout
    while True:
        try:
            problems, forgers = check_once()
        except Exception as exc:  # the API: a refusal, a timeout; report it, try again
            problems, forgers = [f"cannot read the pool-wide Lease: {exc}"], []
        if not problems:
            print(f"ok: every forge manager answers; forging: {', '.join(forgers) or 'none'}")
            return 0
        if time.monotonic() > deadline:
            print(f"FAIL after {timeout:.0f} s: " + "; ".join(problems))
            return 1
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
