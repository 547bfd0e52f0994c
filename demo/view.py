"""The demo's live terminal view: one row per pod, redrawn in place."""

from __future__ import annotations

from dataclasses import dataclass

CLEAR = "\x1b[H\x1b[2J"
GREEN, RED, DIM, BOLD, RESET = "\x1b[32m", "\x1b[31m", "\x1b[2m", "\x1b[1m", "\x1b[0m"


@dataclass(frozen=True)
class PodRow:
    region: str
    pod: str
    local_leader: bool
    pool_holder: bool
    forging: bool
    health_failures: float | None
    """Consecutive failed health checks (None: this pod does not run the checks)."""
    last_change: float | None
    """Seconds since this pod's node last started or stopped forging."""
    alive: bool


def _health(failures: float | None) -> str:
    if failures is None:
        return "-"
    return "healthy" if failures == 0 else f"{int(failures)} failed"


def render(rows: list[PodRow], notes: list[str]) -> str:
    header = ("REGION", "POD", "LOCAL LEADER", "POOL LEASE", "FORGING", "HEALTH", "LAST CHANGE")
    widths = (7, 29, 13, 11, 8, 9, 12)
    lines = [f"{BOLD}cardano-forge demo{RESET}  (Ctrl-C stops everything)", ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    forgers = sum(r.forging for r in rows)
    for r in rows:
        cells = (
            r.region,
            r.pod if r.alive else f"{r.pod} (down)",
            "yes" if r.local_leader else "no",
            "holder" if r.pool_holder else "",
            "FORGING" if r.forging else "no",
            _health(r.health_failures),
            "" if r.last_change is None else f"{r.last_change:.0f} s ago",
        )
        text = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        colour = GREEN if r.forging else (DIM if not r.alive else "")
        lines.append(f"{colour}{text}{RESET}")
    verdict = (
        f"{GREEN}one forger{RESET}"
        if forgers == 1
        else (f"{RED}{forgers} FORGERS{RESET}" if forgers > 1 else f"{DIM}no forger{RESET}")
    )
    lines += ["", f"pool: {verdict}", ""]
    lines += notes
    return CLEAR + "\n".join(lines) + "\n"
