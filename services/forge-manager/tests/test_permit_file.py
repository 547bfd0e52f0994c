"""The forge permit written for forge-guard: the leadership deadline, withdrawn after demotion."""

from __future__ import annotations

from pathlib import Path

import pytest
from forge_manager.decision import Permit
from forge_manager.permit_file import PermitError, PermitFile

from .fakes import Clock, LeaseStore
from .test_manager import Pod


def _deadline_ns(path: Path) -> int:
    return int(path.read_text().strip())


def test_grant_writes_nanoseconds_atomically_and_withdraw_deletes(tmp_path: Path) -> None:
    path = tmp_path / "permit"
    permit = PermitFile(path)
    permit.grant(12.5)
    assert path.read_text() == "12500000000\n"
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
