"""The forge permit written for forge-guard: the leadership deadline, withdrawn after demotion."""

from __future__ import annotations

from pathlib import Path

import pytest
from forge_manager.decision import Permit
from forge_manager.permit_file import PermitError, PermitFile

from .fakes import Clock, LeaseStore
from .test_manager import Pod


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _deadline_ns(path: Path) -> int:
    clock_name, ns, boot = path.read_text().split()
    assert (clock_name, boot) == ("boottime", _boot_id())
    return int(ns)


def test_grant_writes_nanoseconds_atomically_and_withdraw_deletes(tmp_path: Path) -> None:
    path = tmp_path / "permit"
    permit = PermitFile(path, boot_id=lambda: "b00t")
    permit.grant(12.5)
    assert path.read_text() == "boottime 12500000000 b00t\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["permit"]
    permit.withdraw()
    assert not path.exists()
    assert permit.granted_until_ns is None
    permit.withdraw()  # idempotent


def test_grant_into_a_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(PermitError, match="cannot write the forge permit"):
        PermitFile(tmp_path / "absent" / "permit").grant(1.0)


def test_leader_writes_its_deadline_before_forging_and_extends_it_on_renew(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    path = tmp / "permit"
    pod = Pod(tmp, store, clock, permit_file=PermitFile(path))
    pod.elect()
    assert pod.files.all_present()
    # Acquire was sent at t=1015 (the fake clock does not move during the call).
    assert _deadline_ns(path) == int((1015 + pod.settings.renew_deadline) * 1e9)
    clock.advance(2)
    pod.manager.step()
    assert _deadline_ns(path) == int((1017 + pod.settings.renew_deadline) * 1e9)


def test_cluster_permit_deadline_caps_the_written_deadline(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    path = tmp / "permit"
    pod = Pod(tmp, store, clock, permit_file=PermitFile(path))
    pod.permit = Permit(True, "holding the pool-wide lease", until=1018.5)
    pod.elect()
    assert _deadline_ns(path) == int(1018.5 * 1e9)


def test_permit_is_withdrawn_only_after_credentials_are_gone(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    path = tmp / "permit"
    pod = Pod(tmp, store, clock, permit_file=PermitFile(path))
    pod.elect()
    assert path.exists()
    pod.permit = Permit(False, "a better region asked for a hand-over")
    pod.manager.step()
    assert not pod.files.any_present()
    assert pod.signals.sent[-1] == (42,)
    assert not path.exists()


def test_unwritable_permit_keeps_the_pod_from_forging(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock, permit_file=PermitFile(tmp / "no-such-dir" / "permit"))
    reason = pod.elect()
    assert "cannot write the forge permit" in reason
    assert not pod.files.any_present()
    assert pod.metric("cardano_forging_enabled", pod="pod-0", cluster="c1") == 0


# ---- issue 11 ------------------------------------------------------------------------------------


def test_the_format_names_its_clock_and_boot(tmp_path: Path) -> None:
    """``boottime <ns> <boot id>``: an older guard cannot parse it and a newer guard cannot parse
    the older bare integer, so a mixed pair fails closed; a file kept across a reboot names
    another boot, and its deadline (on a clock that restarted) is not believed."""
    path = tmp_path / "permit"
    PermitFile(path).grant(12.5)
    assert path.read_text() == f"boottime 12500000000 {_boot_id()}\n"


def test_the_permit_is_rewritten_whenever_credentials_are_installed(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """forge-guard remembers which permit it revoked (the file, not only its deadline): after a
    revocation, credentials installed again under the same deadline need a new permit file, or
    the guard would take the old, revoked one as still standing and not fence them."""
    tmp, store, clock = world
    path = tmp / "permit"
    pod = Pod(tmp, store, clock, permit_file=PermitFile(path))
    pod.elect()
    assert pod.files.all_present()
    revoked = tmp / "revoked-permit"
    revoked.hardlink_to(path)  # the file forge-guard revoked (the link keeps its inode taken)
    for target in pod.settings.targets:  # and the credentials it removed
        target.unlink()
    pod.manager.reconcile_now()  # one reconcile, at the same instant: the same deadline
    assert pod.files.all_present()
    assert not path.samefile(revoked), "credentials reinstalled under the revoked permit file"
    assert path.stat().st_mtime_ns <= pod.settings.targets[0].stat().st_mtime_ns  # permit first


def test_a_restarted_manager_withdraws_the_permit_it_finds_once_demoted(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    path = tmp / "permit"
    Pod(tmp, store, clock, "pod-1").elect()  # another pod leads
    path.write_text("boottime 1 left-behind\n")  # by this pod's previous manager
    pod = Pod(tmp, store, clock, permit_file=PermitFile(path))
    pod.files.install()  # and its credentials
    assert pod.manager.step().startswith("following pod-1")
    assert not pod.files.any_present()
    assert pod.signals.sent == [(42,)]
    assert not path.exists()
