"""The provisioner's decision: a volume per unbound claim of its class, released ones deleted."""

from __future__ import annotations

from pathlib import Path

from tests.harness.pv_provisioner import (
    PROVISIONER,
    STORAGE_CLASS,
    Claim,
    Create,
    Delete,
    Volume,
    plan,
    volume_manifest,
)


def claim(name: str, **kw: object) -> Claim:
    fields: dict[str, object] = {
        "namespace": "ns",
        "name": name,
        "uid": f"uid-{name}",
        "storage_class": STORAGE_CLASS,
        "phase": "Pending",
        "volume_name": "",
        "request": "1Gi",
        "access_modes": ("ReadWriteOnce",),
        "volume_mode": "Filesystem",
    }
    fields.update(kw)
    return Claim(**fields)  # type: ignore[arg-type]


def test_pending_claims_of_the_class_get_a_volume_once() -> None:
    claims = [
        claim("a"),
        claim("b", volume_name="pvc-uid-b", phase="Bound"),
        claim("c", storage_class="other"),
        claim("d", volume_mode="Block"),
        claim("e"),
    ]
    existing = [Volume("pvc-uid-e", "Available", PROVISIONER, "/v/pvc-uid-e")]

    actions = plan(claims, existing)

    assert actions == [Create(claims[0])]
    assert actions[0].volume_name == "pvc-uid-a"


def test_released_and_failed_volumes_of_this_provisioner_are_deleted() -> None:
    volumes = [
        Volume("pvc-1", "Released", PROVISIONER, "/v/pvc-1"),
        Volume("pvc-2", "Bound", PROVISIONER, "/v/pvc-2"),
        Volume("pvc-3", "Failed", PROVISIONER, "/v/pvc-3"),
        Volume("manual", "Released", "", "/elsewhere"),
    ]

    assert plan([], volumes) == [Delete(volumes[0]), Delete(volumes[2])]


def test_the_volume_is_pre_bound_local_and_pinned_to_the_node() -> None:
    c = claim("a", request="5Gi", access_modes=("ReadWriteOnce", "ReadOnlyMany"))

    pv = volume_manifest(Create(c), Path("/state/volumes"), "localhost")

    assert pv["metadata"]["name"] == "pvc-uid-a"
    assert pv["spec"]["capacity"] == {"storage": "5Gi"}
    assert pv["spec"]["accessModes"] == ["ReadWriteOnce", "ReadOnlyMany"]
    assert pv["spec"]["claimRef"]["uid"] == "uid-a"
    assert pv["spec"]["local"] == {"path": "/state/volumes/pvc-uid-a"}
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["values"] == ["localhost"]
