"""``cardano-forge`` (also ``kubectl cardano-forge``): the operator's command line.

Commands: ``status``, ``switchover``, ``pause``, ``resume``, ``history``, ``check``,
``completion``, ``version``. Every failure ends in one line on stderr and a non-zero exit:
1 for bad input, a refusal, no permission or an unreachable API; 2 for a wrong command line;
3 when a change was made but its effect was not seen within ``--timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TextIO

import argcomplete
import argcomplete.shell_integration
import yaml

from cardano_forge_cli import __version__
from cardano_forge_cli.actions import (
    Handover,
    apply_change,
    lease_holder,
    new_request_id,
    record_event,
    region_status,
    watch_handover,
)
from cardano_forge_cli.check import check_release, check_values, failed, render_findings
from cardano_forge_cli.contract import (
    POD_SWITCHOVER,
    REQUEST_ANNOTATION,
    RESULT_ANNOTATION,
    SwitchoverRequest,
    SwitchoverResult,
    capabilities,
)
from cardano_forge_cli.durations import DurationError, format_duration, parse_duration
from cardano_forge_cli.errors import EXIT_ERROR, EXIT_TIMEOUT, EXIT_USAGE, CliError, Refused
from cardano_forge_cli.history import history_entries, pending_overrides, render_history
from cardano_forge_cli.inventory import Scope, collect, read_facts, read_lease
from cardano_forge_cli.kube import Conflict, Kube, Target, core_path, lease_path
from cardano_forge_cli.model import LeaseInfo, PoolView, Snapshot, Workload, format_time
from cardano_forge_cli.plan import (
    Plan,
    heartbeat_fresh,
    plan_pause,
    plan_pod_switchover,
    plan_region_switchover,
    plan_resume,
)
from cardano_forge_cli.status import render_status, status_document

PLAN_ATTEMPTS = 3
DEFAULT_STALE_AFTER = 12.0
MAX_PAUSE = 30 * 86400.0


# ---- the command line ----------------------------------------------------------------------------
def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("cluster")
    g.add_argument(
        "--kubeconfig",
        default=default,
        help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)",
    )
    g.add_argument(
        "--context", default=default, help="kubeconfig context (default: the current one)"
    )
    g.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace of the block-producer pods (default: the context's)",
    )
    g.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        default=default,
        help="look in every namespace",
    )
    g.add_argument(
        "--release",
        default=default,
        help="only this Helm release's pods (app.kubernetes.io/instance)",
    )
    g.add_argument("--pool", default=default, help="only this pool (its pool-wide Lease name)")
    g.add_argument(
        "--coordination-kubeconfig",
        default=default,
        help="kubeconfig of the API server where the regions meet (multi-cluster)",
    )
    g.add_argument(
        "--coordination-context", default=default, help="context in --coordination-kubeconfig"
    )
    g.add_argument(
        "--coordination-namespace",
        default=default,
        help="namespace of the CardanoForgeClusters (default: from the pods' environment)",
    )
    g.add_argument(
        "--request-timeout",
        default=default,
        metavar="DURATION",
        help="bound on every API call (default 5s)",
    )


def _output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")


def region_completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Region names for shell completion (bounded; nothing on any error)."""
    try:
        ctx = Context.from_args(parsed_args, timeout=2.0)
        snap = collect(ctx.kube, ctx.coordination, replace(ctx.scope(), with_facts=False))
        return sorted(r.name for p in snap.pools for r in p.regions if r.name.startswith(prefix))
    except Exception:
        return []


def pod_completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    try:
        ctx = Context.from_args(parsed_args, timeout=2.0)
        snap = collect(ctx.kube, ctx.coordination, replace(ctx.scope(), with_facts=False))
        return sorted(w.name for p in snap.pools for w in p.pods if w.name.startswith(prefix))
    except Exception:
        return []


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cardano-forge",
        description="Status, planned hand-overs, maintenance, history and checks of a Cardano "
        "pool's forge managers (cardano-forge). Also runs as 'kubectl cardano-forge'.",
    )
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("status", help="one table per pool: regions, the pool-wide Lease, pods")
    _global_options(p, suppress=True)
    _output_option(p)
    p.add_argument("-w", "--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument(
        "--interval", default="2s", metavar="DURATION", help="refresh interval of --watch (2s)"
    )
    p.add_argument(
        "--no-pod-metrics",
        action="store_true",
        help="do not read the forge managers' /metrics (per-pod facts unknown)",
    )

    p = sub.add_parser(
        "switchover", help="planned hand-over to a region or a pod; waits until it forges"
    )
    _global_options(p, suppress=True)
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-region", metavar="REGION").completer = region_completer  # type: ignore[attr-defined]
    to.add_argument("--to-pod", metavar="POD").completer = pod_completer  # type: ignore[attr-defined]
    p.add_argument(
        "--for",
        dest="duration",
        default="24h",
        metavar="DURATION",
        help="region switchover: how long the overrides last (24h); then the spec's "
        "priorities apply again",
    )
    p.add_argument(
        "--timeout",
        default="2m",
        metavar="DURATION",
        help="how long to wait for the target to forge (2m)",
    )
    p.add_argument(
        "--stale-after",
        default=f"{DEFAULT_STALE_AFTER:g}s",
        metavar="DURATION",
        help="a region whose heartbeat has not changed this long is not live (the managers' "
        "CLUSTER_STALE_AFTER, 12s)",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    p = sub.add_parser(
        "pause", help="a region stops forging until --for has passed (spec.override Disabled)"
    )
    _global_options(p, suppress=True)
    p.add_argument("region", metavar="REGION").completer = region_completer  # type: ignore[attr-defined]
    p.add_argument(
        "--for", dest="duration", required=True, metavar="DURATION", help="e.g. 2h (at most 30d)"
    )
    p.add_argument(
        "--reason", required=True, help="why, e.g. 'kernel upgrade' (kept in the override)"
    )
    p.add_argument(
        "--timeout",
        default="2m",
        metavar="DURATION",
        help="how long to wait for the region to stop forging (2m)",
    )
    p.add_argument("--no-wait", action="store_true", help="return once the override is written")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    p = sub.add_parser(
        "resume", help="remove a region's override (pause or switchover): back to its spec"
    )
    _global_options(p, suppress=True)
    p.add_argument("region", metavar="REGION").completer = region_completer  # type: ignore[attr-defined]
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    p = sub.add_parser("history", help="who forged when and why: Events, status conditions, Leases")
    _global_options(p, suppress=True)
    _output_option(p)
    p.add_argument(
        "--since", default=None, metavar="DURATION", help="only the last DURATION, e.g. 6h"
    )

    p = sub.add_parser("check", help="check a values file (--values) or a running release")
    _global_options(p, suppress=True)
    _output_option(p)
    p.add_argument(
        "-f",
        "--values",
        action="append",
        default=[],
        metavar="FILE",
        help="values file(s) as for helm install; without it, the running release is checked",
    )
    p.add_argument(
        "--chart",
        default=None,
        help="the chart to render the values with (default ./charts/cardano-forge)",
    )
    p.add_argument("--helm", default=None, help="helm binary (default: helm on PATH)")
    p.add_argument(
        "--kube-version",
        default="1.34.0",
        help="Kubernetes version to render the values for (1.34.0)",
    )

    p = sub.add_parser("completion", help="print the shell completion script")
    p.add_argument("shell", choices=("bash", "zsh", "fish", "tcsh"))

    sub.add_parser("version", help="print the version")
    return parser


# ---- shared context ------------------------------------------------------------------------------
class Context:
    def __init__(self, args: argparse.Namespace, kube: Kube, coordination: Kube | None) -> None:
        self.args = args
        self.kube = kube
        self.coordination = coordination
        ns = getattr(args, "namespace", None)
        self.all_namespaces = bool(getattr(args, "all_namespaces", False))
        self.namespace: str = ns or kube.default_namespace

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, timeout: float | None = None) -> Context:
        raw = getattr(args, "request_timeout", None)
        limit = timeout or (
            parse_duration(raw, what="--request-timeout", maximum=300) if raw else 5.0
        )
        kube = Kube(
            Target(getattr(args, "kubeconfig", None), getattr(args, "context", None)), timeout=limit
        )
        coordination = None
        if getattr(args, "coordination_kubeconfig", None) or getattr(
            args, "coordination_context", None
        ):
            coordination = Kube(
                Target(
                    getattr(args, "coordination_kubeconfig", None)
                    or getattr(args, "kubeconfig", None),
                    getattr(args, "coordination_context", None),
                ),
                timeout=limit,
            )
        return cls(args, kube, coordination)

    @property
    def coord(self) -> Kube:
        return self.coordination or self.kube

    def scope(self, **changes: Any) -> Scope:
        base = Scope(
            namespace=None if self.all_namespaces else self.namespace,
            release=getattr(self.args, "release", None),
            pool=getattr(self.args, "pool", None),
            coordination_namespace=getattr(self.args, "coordination_namespace", None),
        )
        return replace(base, **changes)

    def close(self) -> None:
        self.kube.close()
        if self.coordination is not None:
            self.coordination.close()


def say(text: str = "", stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def confirm(args: argparse.Namespace, question: str) -> None:
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise CliError(
            "refusing to change anything without confirmation: pass --yes "
            "(or --dry-run to see the plan)"
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("cancelled: nothing was changed")


def dump(doc: Any, output: str) -> str:
    if output == "json":
        return json.dumps(doc, indent=2, sort_keys=False, default=str)
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip()


def duration_arg(raw: str, what: str, maximum: float | None = None) -> float:
    try:
        return parse_duration(raw, what=what, maximum=maximum)
    except DurationError as exc:
        raise CliError(str(exc)) from None


# ---- status --------------------------------------------------------------------------------------
def cmd_status(ctx: Context) -> int:
    args = ctx.args
    scope = ctx.scope(with_facts=not args.no_pod_metrics)
    if not args.watch:
        snap = collect(ctx.kube, ctx.coordination, scope)
        doc = status_document(snap)
        say(render_status(doc) if args.output == "table" else dump(doc, args.output))
        return 0
    interval = duration_arg(args.interval, "--interval", maximum=3600)
    tty = sys.stdout.isatty()
    # Ctrl-C ends the watch after the frame in progress (each read is bounded by
    # --request-timeout): a KeyboardInterrupt raised inside the API client or the pool of
    # metric readers could leave threads to join at exit or end in a traceback.
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: stop.set())
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                doc = status_document(collect(ctx.kube, ctx.coordination, scope))
                if args.output == "table":
                    body = render_status(doc)
                elif args.output == "json":
                    body = json.dumps(doc, default=str)
                else:
                    body = "---\n" + dump(doc, "yaml")
            except CliError as exc:
                body = f"error: {exc.message}"
                if args.output != "table":
                    body = json.dumps(
                        {"time": format_time(datetime.now(UTC)), "error": exc.message}
                    )
            if args.output == "table":
                head = (
                    f"every {format_duration(interval)}: cardano-forge status   "
                    f"{format_time(datetime.now(UTC))}   (Ctrl-C to stop)"
                )
                say(("\x1b[H\x1b[2J" if tty else "") + head + "\n\n" + body + ("" if tty else "\n"))
            else:
                say(body)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


# ---- switchover ----------------------------------------------------------------------------------
def _pool_with_region(snap: Snapshot, region: str) -> PoolView:
    pools = [p for p in snap.pools if p.region(region) is not None]
    if len(pools) == 1:
        return pools[0]
    if len(pools) > 1:
        raise CliError(
            f"region {region} is in several pools ({', '.join(p.name for p in pools)}): pass --pool"
        )
    regions = sorted({r.name for p in snap.pools for r in p.regions})
    if not regions:
        raise Refused(
            f"unknown region {region!r}: no CardanoForgeCluster found (pools: "
            f"{', '.join(p.name for p in snap.pools)}; a pool without cluster management "
            "has no regions: use --to-pod)"
        )
    raise Refused(f"unknown region {region!r}: the regions are {', '.join(regions)}")


def observe_live(
    ctx: Context, pool: PoolView, now: datetime, stale_after: float, must: str | None = None
) -> set[str]:
    """Regions whose heartbeat was renewed within ``stale_after`` by the timestamps; for ``must``
    when it is not, watch its heartbeat Lease change for up to ``stale_after`` (clock skew)."""
    live = {r.name for r in pool.regions if heartbeat_fresh(r, now, stale_after)}
    if must is None or must in live:
        return live
    region = pool.region(must)
    if region is None or region.heartbeat is None:
        return live
    first = region.heartbeat.resource_version
    deadline = time.monotonic() + stale_after
    while time.monotonic() < deadline:
        current = read_lease(ctx.coord, pool.namespace, region.heartbeat.name)
        if current is not None and current.resource_version != first:
            return live | {must}
        time.sleep(0.5)
    return live


def print_plan(plan: Plan) -> None:
    for change in plan.changes:
        say(f"  {change.why}")
    for note in plan.notes:
        say(f"  {note}")


def apply_plan(ctx: Context, pool: PoolView, plan: Plan) -> None:
    for change in plan.changes:
        apply_change(ctx.coord, pool.namespace, change)


def describe_handover(h: Handover, *, from_what: str, interval: float) -> str:
    parts = [f"took {h.seconds:.1f} s"]
    gap = h.gap
    if gap.at_most is not None:
        low = f"{gap.at_least:.2f}" if gap.at_least is not None else "?"
        parts.append(
            f"no node forged for {low} to {gap.at_most:.2f} s (from the forge managers' "
            f"metrics, sampled every {interval:g} s)"
        )
    elif h.note:
        parts.append(h.note)
    return f"forging moved from {from_what} to {h.holder} ({'; '.join(parts)})"


def cmd_switchover(ctx: Context) -> int:
    if ctx.args.to_pod:
        return switchover_pod(ctx)
    return switchover_region(ctx)


def switchover_region(ctx: Context) -> int:
    args = ctx.args
    duration = duration_arg(args.duration, "--for", maximum=MAX_PAUSE)
    timeout = duration_arg(args.timeout, "--timeout", maximum=3600)
    stale_after = duration_arg(args.stale_after, "--stale-after", maximum=600)
    target = args.to_region
    who = ctx.kube.whoami()
    shown: tuple[str, ...] | None = None
    for attempt in range(PLAN_ATTEMPTS):
        snap = collect(ctx.kube, ctx.coordination, ctx.scope())
        pool = _pool_with_region(snap, target)
        region = pool.region(target)
        assert region is not None
        live = observe_live(ctx, pool, snap.taken_at, stale_after, must=target)
        leader = region.record.status.active_leader if region.record.status else ""
        leader_pod = next((w for w in pool.pods if w.region == target and w.name == leader), None)
        plan = plan_region_switchover(
            pool,
            target,
            now=snap.taken_at,
            duration=duration,
            requested_by=who,
            live=live,
            leader_facts=pool.fact(leader_pod) if leader_pod else None,
        )
        if plan.nothing_to_do:
            say(plan.nothing_to_do)
            return 0
        lines = tuple(c.why for c in plan.changes)
        if lines != shown:
            say(f"switchover to region {target} (pool {pool.name}, namespace {pool.namespace}):")
            print_plan(plan)
            if args.dry_run:
                say("dry run: nothing changed")
                return 0
            confirm(args, "apply these overrides?")
            shown = lines
        old_holder = pool.lease.holder if pool.lease else None
        old_pod = next(
            (w for w in pool.pods if pool.holder_pod == w.name and w.region == pool.holder_region),
            None,
        )
        try:
            apply_plan(ctx, pool, plan)
        except Conflict:
            if attempt == PLAN_ATTEMPTS - 1:
                raise CliError(
                    f"the CardanoForgeClusters of pool {pool.name} keep changing while "
                    "the overrides are written: run the command again"
                ) from None
            say("a region's resource changed while writing: reading again")
            continue
        break
    warning = record_event(
        ctx.coord,
        pool.namespace,
        _cfc_ref(target),
        "SwitchoverRequested",
        f"switchover to region {target} requested by {who}: "
        + "; ".join(c.why for c in plan.changes),
    )
    if warning:
        say(f"warning: {warning}", sys.stderr)
    say(f"overrides written; waiting up to {format_duration(timeout)} for region {target} to forge")
    interval = 0.2
    handover = watch_handover(
        ctx.kube,
        holder=lease_holder(ctx.coord, pool.namespace, pool.name),
        arrived=lambda h: h is not None and h.split("/", 1)[0] == target,
        old=old_pod,
        candidates=[w for w in pool.pods if w.region == target],
        pod_of_holder=lambda h: h.split("/", 1)[1] if h and "/" in h else None,
        timeout=timeout,
        interval=interval,
        confirmed=lambda: (
            region_status(ctx.coord, pool.namespace, target).get("forgingEnabled") is True
        ),
    )
    if not handover.done:
        cond = _forging_message(ctx, pool, target)
        raise CliError(
            f"region {target} did not forge within {format_duration(timeout)} (pool Lease held by "
            f"{handover.holder or 'nobody'}; {target} says: {cond}); the overrides stay until "
            f"{format_time(plan.expires_at)}: undo with 'cardano-forge resume {target}'",
            EXIT_TIMEOUT,
        )
    if not any(w.region == target for w in pool.pods):
        handover.note = (
            f"gap unknown: the pods of region {target} are not in this view (pass -A, or -n "
            "with their namespace)"
        )
    text = describe_handover(handover, from_what=old_holder or "nobody", interval=interval)
    say(text)
    record_event(ctx.coord, pool.namespace, _cfc_ref(target), "SwitchoverCompleted", text)
    if handover.gap.overlap:
        raise CliError(
            "the new forger's start time is earlier than a sample in which the old one "
            "still forged: two nodes may have forged at once (or the pods' clocks "
            "disagree): check cardano_forging_enabled and the nodes' logs"
        )
    return 0


def _cfc_ref(name: str) -> dict[str, str]:
    return {"apiVersion": "cardano.io/v1", "kind": "CardanoForgeCluster", "name": name}


def _forging_message(ctx: Context, pool: PoolView, region: str) -> str:
    try:
        status = region_status(ctx.coord, pool.namespace, region)
    except CliError as exc:
        return exc.message
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Forging":
            return str(cond.get("message") or cond.get("reason") or "no reason given")
    return "no Forging condition yet"


def switchover_pod(ctx: Context) -> int:
    args = ctx.args
    timeout = duration_arg(args.timeout, "--timeout", maximum=3600)
    snap = collect(ctx.kube, ctx.coordination, ctx.scope())
    pods = [w for p in snap.pools for w in p.pods]
    from cardano_forge_cli.plan import find_pod  # noqa: PLC0415 (keeps the import list short)

    pod = find_pod(pods, args.to_pod)
    pool = next(p for p in snap.pools if pod in p.pods)
    lease = (
        pool.local_leases.get(pod.lease_key)
        if pod.lease_key in pool.local_leases
        else read_lease(ctx.kube, pod.namespace, pod.lease_name)
    )
    holder = next(
        (w for w in pool.pods if lease and w.name == lease.holder and w.lease_key == pod.lease_key),
        None,
    )
    holder_version = pool.fact(holder).version if holder else None
    plan = plan_pod_switchover(
        pods,
        args.to_pod,
        lease=lease,
        facts=pool.fact(pod),
        holder_version=holder_version,
        now=snap.taken_at,
        timeout=timeout,
        requested_by=ctx.kube.whoami(),
        request_id=new_request_id(),
    )
    if plan.nothing_to_do:
        say(plan.nothing_to_do)
        return 0
    assert plan.request is not None
    say(
        f"switchover of region {pod.region}'s leadership from {plan.lease.holder} to {pod.name} "
        f"(Lease {pod.namespace}/{pod.lease_name}), request valid until "
        f"{format_time(plan.request.expires_at)}"
    )
    if args.dry_run:
        say("dry run: nothing changed")
        return 0
    confirm(args, "request this switchover?")
    _write_request(ctx, pod, plan.lease, plan.request)
    record_event(
        ctx.kube,
        pod.namespace,
        {"apiVersion": "v1", "kind": "Pod", "name": pod.name},
        "PodSwitchoverRequested",
        f"leadership of region {pod.region} requested for "
        f"{pod.name} by {plan.request.requested_by}",
    )
    refused: list[str] = []
    request_id = plan.request.id

    def holder_now() -> str | None:
        current = read_lease(ctx.kube, pod.namespace, pod.lease_name)
        if current is None:
            return None
        raw = current.annotations.get(RESULT_ANNOTATION)
        if raw:
            try:
                result = SwitchoverResult.decode(raw)
            except ValueError:
                result = None
            if result is not None and result.id == request_id and result.outcome != "done":
                refused.append(f"{result.outcome}: {result.reason}")
        return current.holder

    was_forging = pool.fact(holder).forging if holder else None
    interval = 0.2
    handover = watch_handover(
        ctx.kube,
        holder=holder_now,
        arrived=lambda h: h == pod.name or bool(refused),
        old=holder,
        candidates=[pod],
        pod_of_holder=lambda h: h,
        timeout=timeout,
        interval=interval,
        confirmed=(lambda: bool(refused) or read_facts(ctx.kube, pod, 1.0).forging is True)
        if was_forging
        else None,
    )
    if refused:
        raise CliError(f"the forge manager refused the switchover to {pod.name}: {refused[0]}")
    if not handover.done:
        _withdraw_request(ctx, pod, plan.request.id)
        raise CliError(
            f"{pod.name} did not become the leader within {format_duration(timeout)} "
            f"(holder: {handover.holder or 'nobody'}); the request was withdrawn",
            EXIT_TIMEOUT,
        )
    say(describe_handover(handover, from_what=plan.lease.holder or "nobody", interval=interval))
    return 0


REQUEST_ATTEMPTS = 10
"""Writes of a pod switchover request: the holder renews its Lease every retry period, and each
renew between the CLI's read and its write is a conflict."""


def _write_request(
    ctx: Context, pod: Workload, planned: LeaseInfo, request: SwitchoverRequest
) -> None:
    """The request, against the version just read: a conflict (the holder renewed meanwhile) is
    read again and retried while the same holder holds the Lease, still advertising pod
    switchover, with no other request pending."""
    what = f"update Lease {pod.lease_name} in namespace {pod.namespace}"
    for _ in range(REQUEST_ATTEMPTS):
        lease = read_lease(ctx.kube, pod.namespace, pod.lease_name)
        if lease is None or lease.holder != planned.holder:
            raise CliError(
                f"the Lease {pod.lease_name} changed hands while the request was prepared "
                f"(holder now: {(lease.holder if lease else None) or 'nobody'}); nothing was "
                "written: run the switchover again"
            )
        if POD_SWITCHOVER not in capabilities(lease.annotations):
            raise CliError(
                f"the holder {lease.holder} no longer advertises {POD_SWITCHOVER!r}; nothing "
                "was written"
            )
        pending = lease.annotations.get(REQUEST_ANNOTATION)
        if pending and pending != planned.annotations.get(REQUEST_ANNOTATION):
            raise CliError(
                "another switchover request appeared on the Lease meanwhile; nothing was written"
            )
        body = {
            "metadata": {
                "resourceVersion": lease.resource_version,
                "annotations": {REQUEST_ANNOTATION: request.encode()},
            }
        }
        try:
            ctx.kube.merge_patch(what, lease_path(pod.namespace, pod.lease_name), body)
            return
        except Conflict:
            continue
    raise Conflict(f"cannot {what}: it kept changing ({REQUEST_ATTEMPTS} attempts)")


def _withdraw_request(ctx: Context, pod: Workload, request_id: str) -> None:
    for _ in range(PLAN_ATTEMPTS):
        lease = read_lease(ctx.kube, pod.namespace, pod.lease_name)
        if lease is None or request_id not in lease.annotations.get(REQUEST_ANNOTATION, ""):
            return
        body = {
            "metadata": {
                "resourceVersion": lease.resource_version,
                "annotations": {REQUEST_ANNOTATION: None},
            }
        }
        try:
            ctx.kube.merge_patch(
                "withdraw the switchover request", lease_path(pod.namespace, pod.lease_name), body
            )
            return
        except Conflict:
            continue


# ---- pause / resume ------------------------------------------------------------------------------
def _apply_with_retries(
    ctx: Context, make_plan: Callable[[Snapshot, PoolView], Plan], region: str, verb: str
) -> tuple[PoolView, Plan] | None:
    shown: tuple[str, ...] | None = None
    for attempt in range(PLAN_ATTEMPTS):
        snap = collect(ctx.kube, ctx.coordination, ctx.scope(with_facts=False))
        pool = _pool_with_region(snap, region)
        plan = make_plan(snap, pool)
        if plan.nothing_to_do:
            say(plan.nothing_to_do)
            return None
        lines = tuple(c.why for c in plan.changes)
        if lines != shown:
            say(f"{verb} region {region} (pool {pool.name}, namespace {pool.namespace}):")
            print_plan(plan)
            if ctx.args.dry_run:
                say("dry run: nothing changed")
                return None
            confirm(ctx.args, f"{verb} region {region}?")
            shown = lines
        try:
            apply_plan(ctx, pool, plan)
        except Conflict:
            if attempt == PLAN_ATTEMPTS - 1:
                raise CliError(
                    f"CardanoForgeCluster {region} keeps changing: run the command again"
                ) from None
            continue
        return pool, plan
    return None


def cmd_pause(ctx: Context) -> int:
    args = ctx.args
    duration = duration_arg(args.duration, "--for", maximum=MAX_PAUSE)
    timeout = duration_arg(args.timeout, "--timeout", maximum=3600)
    who = ctx.kube.whoami()

    def make(snap: Snapshot, pool: PoolView) -> Plan:
        live = {
            r.name for r in pool.regions if heartbeat_fresh(r, snap.taken_at, DEFAULT_STALE_AFTER)
        }
        return plan_pause(
            pool,
            args.region,
            now=snap.taken_at,
            duration=duration,
            reason=args.reason,
            requested_by=who,
            live=live,
        )

    done = _apply_with_retries(ctx, make, args.region, "pause")
    if done is None:
        return 0
    pool, plan = done
    warning = record_event(
        ctx.coord,
        pool.namespace,
        _cfc_ref(args.region),
        "Paused",
        f"paused by {who} until {format_time(plan.expires_at)}: {args.reason}",
    )
    if warning:
        say(f"warning: {warning}", sys.stderr)
    if args.no_wait:
        say(f"region {args.region} paused until {format_time(plan.expires_at)}")
        return 0
    region = args.region
    successor = plan.extra.get("successor")

    def stopped() -> bool:
        status = region_status(ctx.coord, pool.namespace, region)
        return (
            status.get("effectiveState") == "Disabled" and status.get("forgingEnabled") is not True
        )

    interval = 0.2
    if successor:
        old_pod = next(
            (w for w in pool.pods if w.region == region and w.name == pool.holder_pod), None
        )
        handover = watch_handover(
            ctx.kube,
            holder=lease_holder(ctx.coord, pool.namespace, pool.name),
            arrived=lambda h: h is not None and not h.startswith(f"{region}/"),
            old=old_pod,
            candidates=[w for w in pool.pods if w.region != region],
            pod_of_holder=lambda h: h.split("/", 1)[1] if h and "/" in h else None,
            timeout=timeout,
            interval=interval,
            confirmed=stopped,
        )
        if handover.done:
            from_what = pool.lease.holder if pool.lease and pool.lease.holder else region
            say(
                f"region {region} paused until {format_time(plan.expires_at)}; "
                + describe_handover(handover, from_what=from_what, interval=interval)
            )
            return 0
    else:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holder = lease_holder(ctx.coord, pool.namespace, pool.name)()
            if stopped() and not (holder or "").startswith(f"{region}/"):
                say(
                    f"region {region} paused until {format_time(plan.expires_at)}; the pool-wide "
                    f"Lease is held by {holder or 'nobody'}"
                )
                return 0
            time.sleep(0.25)
    raise CliError(
        f"region {region} did not hand over forging within {format_duration(timeout)}: "
        f"{_forging_message(ctx, pool, region)}; it stays paused until "
        f"{format_time(plan.expires_at)}",
        EXIT_TIMEOUT,
    )


def cmd_resume(ctx: Context) -> int:
    args = ctx.args
    done = _apply_with_retries(
        ctx,
        lambda snap, pool: plan_resume(pool, args.region, now=snap.taken_at),
        args.region,
        "resume",
    )
    if done is None:
        return 0
    pool, plan = done
    who = ctx.kube.whoami()
    warning = record_event(
        ctx.coord,
        pool.namespace,
        _cfc_ref(args.region),
        "Resumed",
        f"override removed by {who}: {plan.changes[0].why}",
    )
    if warning:
        say(f"warning: {warning}", sys.stderr)
    say(f"region {args.region} resumed: it follows its spec again")
    return 0


# ---- history -------------------------------------------------------------------------------------
def cmd_history(ctx: Context) -> int:
    args = ctx.args
    since = duration_arg(args.since, "--since") if args.since else None
    snap = collect(ctx.kube, ctx.coordination, ctx.scope())
    events: list[dict[str, Any]] = []
    pod_namespaces = {w.namespace for p in snap.pools for w in p.pods}
    coord_namespaces = {p.namespace for p in snap.pools if p.cluster}
    for kube, namespaces in ((ctx.kube, pod_namespaces), (ctx.coord, coord_namespaces)):
        for ns in sorted(namespaces):
            try:
                found = kube.items(f"list Events in namespace {ns}", core_path(ns, "events"))
            except CliError as exc:
                say(f"warning: {exc.message}", sys.stderr)
                continue
            events += found
    entries = history_entries(snap, _unique(events))
    if since is not None:
        cutoff = snap.taken_at - timedelta(seconds=since)
        entries = [e for e in entries if e.time >= cutoff]
    pending = pending_overrides(snap)
    if args.output == "table":
        say(render_history(entries, pending))
    else:
        say(dump({"entries": [e.document() for e in entries], "inForce": pending}, args.output))
    return 0


def _unique(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for e in events:
        uid = str((e.get("metadata") or {}).get("uid") or id(e))
        seen[uid] = e
    return list(seen.values())


# ---- check ---------------------------------------------------------------------------------------
def cmd_check(ctx: Context | None, args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    if args.values:
        namespace = getattr(args, "namespace", None) or "default"
        findings = check_values(
            [Path(v) for v in args.values],
            chart=args.chart,
            helm=args.helm,
            release=getattr(args, "release", None) or "cardano-forge",
            namespace=namespace,
            kube_version=args.kube_version,
        )
    else:
        assert ctx is not None
        findings = check_release(
            ctx.kube, ctx.coordination, ctx.namespace, getattr(args, "release", None)
        )
    if args.output == "table":
        say(render_findings(findings))
    else:
        say(
            dump(
                {"findings": [f.document() for f in findings], "ok": not failed(findings)},
                args.output,
            )
        )
    return EXIT_ERROR if failed(findings) else 0


DURATION_OPTIONS = {
    "duration": ("--for", MAX_PAUSE),
    "timeout": ("--timeout", 3600.0),
    "stale_after": ("--stale-after", 600.0),
    "interval": ("--interval", 3600.0),
    "since": ("--since", None),
    "request_timeout": ("--request-timeout", 300.0),
}


def check_durations(args: argparse.Namespace) -> None:
    """Every duration option is parsed before anything else happens: a typo costs nothing."""
    for attr, (flag, maximum) in DURATION_OPTIONS.items():
        raw = getattr(args, attr, None)
        if raw:
            duration_arg(raw, flag, maximum)


# ---- entry points --------------------------------------------------------------------------------
COMMANDS: dict[str, Callable[[Context], int]] = {
    "status": cmd_status,
    "switchover": cmd_switchover,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "history": cmd_history,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "version":
        say(f"cardano-forge {__version__}")
        return 0
    if args.command == "completion":
        say(
            argcomplete.shell_integration.shellcode(
                ["cardano-forge", "kubectl-cardano_forge"], shell=args.shell
            )
        )
        return 0
    ctx: Context | None = None
    try:
        check_durations(args)
        if args.command == "check" and args.values:
            return cmd_check(None, args)
        ctx = Context.from_args(args)
        if args.command == "check":
            return cmd_check(ctx, args)
        return COMMANDS[args.command](ctx)
    except CliError as exc:
        say(f"error: {exc.message}", sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        say("interrupted", sys.stderr)
        return 130
    finally:
        if ctx is not None:
            ctx.close()


def kubectl_complete() -> int:
    """``kubectl_complete-cardano_forge``: kubectl (1.26+) runs it to complete the plugin's
    arguments and reads one completion per line."""
    words = sys.argv[1:]
    line = " ".join(["cardano-forge", *words]) if words else "cardano-forge "
    os.environ.update(
        _ARGCOMPLETE="1",
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
        _ARGCOMPLETE_IFS="\n",
        _ARGCOMPLETE_SUPPRESS_SPACE="1",
    )
    os.environ.pop("_ARGCOMPLETE_STDOUT_FILENAME", None)
    parser = build_parser()
    with contextlib.suppress(SystemExit):
        argcomplete.autocomplete(parser, output_stream=sys.stdout, exit_method=sys.exit)
    sys.stdout.write("\n:4\n")  # cobra's ShellCompDirectiveNoFileComp
    return 0
