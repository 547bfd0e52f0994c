"""Startup validation: timing safety and environment parsing."""

from __future__ import annotations

import pytest
from forge_manager.config import ConfigError, load_settings
from forge_manager.timing import Timing, TimingError, check_timing

BASE = {
    "POD_NAME": "cardano-bp-0",
    "NAMESPACE": "cardano",
    "SOURCE_KES_KEY": "/secrets/kes.skey",
    "SOURCE_VRF_KEY": "/secrets/vrf.skey",
    "SOURCE_OP_CERT": "/secrets/node.cert",
    "NODE_SOCKET": "/ipc/node.socket",
}


def test_defaults_pass() -> None:
    s = load_settings(BASE)
    assert (s.lease_duration, s.renew_deadline, s.retry_period, s.request_timeout) == (15, 10, 2, 1)
    assert s.lease_name == "cardano-node-leader"
    assert str(s.target_kes_key) == "/opt/cardano/secrets/kes.skey"
    assert str(s.target_op_cert) == "/opt/cardano/secrets/node.cert"
    assert s.metrics_port == 8000 and s.node_process_name == "cardano-node"
    assert s.node_pid_file is None and s.cluster_name == "cardano"
    check_timing(s.timing)


@pytest.mark.parametrize(
    ("timing", "fragment"),
    [
        (Timing(15, 10, 2, 3), "lower KUBE_REQUEST_TIMEOUT"),
        (Timing(15, 2, 2, 1), "raise LEASE_RENEW_DEADLINE or lower LEASE_RETRY_PERIOD"),
        (Timing(10, 10, 2, 1), "raise LEASE_DURATION or lower LEASE_RENEW_DEADLINE"),
        (Timing(17, 15, 5, 1), "raise LEASE_DURATION to at least 22.5"),
        (Timing(14, 10, 2, 1), "lower LEASE_RENEW_DEADLINE to at most 9.5"),
    ],
)
def test_unsafe_timing_names_the_value_to_change(timing: Timing, fragment: str) -> None:
    with pytest.raises(TimingError) as exc:
        check_timing(timing)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_the_boundary_is_inclusive() -> None:
    check_timing(Timing(8, 5, 1, 0.5))  # 1 + 5 + 0.5 + 0.5 + 1 == 8


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"POD_NAME": ""}, "POD_NAME is not set"),
        ({"NAMESPACE": "Bad_NS"}, "NAMESPACE='Bad_NS' is not valid"),
        ({"LEASE_DURATION": "15s"}, "LEASE_DURATION='15s' is not valid: expected a whole number"),
        ({"LEASE_RETRY_PERIOD": "-1"}, "LEASE_RETRY_PERIOD='-1' is not valid"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT='70000' is not valid: expected a port"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not valid: expected json or text"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is not valid"),
        ({"SOURCE_VRF_KEY": "vrf.skey"}, "SOURCE_VRF_KEY='vrf.skey' is not valid: expected an"),
        ({"NODE_SOCKET": ""}, "NODE_SOCKET is not set"),
        ({"CARDANO_NODE_PROCESS_NAME": "bin/cardano-node"}, "CARDANO_NODE_PROCESS_NAME="),
        ({"TARGET_KES_KEY": "/secrets/kes.skey"}, "a TARGET_* path equals a SOURCE_* path"),
        ({"TARGET_VRF_KEY": "/opt/cardano/secrets/kes.skey"}, "three different paths"),
        ({"LEASE_DURATION": "12"}, "unsafe timing"),
        ({"KUBE_REQUEST_TIMEOUT": "5"}, "KUBE_REQUEST_TIMEOUT=5 exceeds LEASE_RETRY_PERIOD=2"),
    ],
)
def test_invalid_values_raise_one_line_naming_the_variable(
    overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings({**BASE, **overrides})
    assert variable in str(exc.value)
    assert "\n" not in str(exc.value)
