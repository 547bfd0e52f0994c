"""Every failure the demo meets is printed as one line."""

from __future__ import annotations

from kubernetes import client

from demo.__main__ import one_line
from tests.harness.node import NodeError


def test_a_component_error_with_its_log_tail_is_its_first_line() -> None:
    exc = NodeError("kubelet exited (1) during start-up; its log /x/kubelet.log ends:\nE1 a\nE2 b")
    assert one_line(exc) == "kubelet exited (1) during start-up; its log /x/kubelet.log ends:"


def test_an_api_error_is_its_status_not_the_whole_response() -> None:
    exc = client.ApiException(status=409, reason="Conflict")
    exc.body = '{"message":"secrets \\"pool-keys\\" already exists"}\n'
    text = one_line(exc)
    assert text.startswith("the API answered 409 Conflict: ")
    assert "pool-keys" in text
    assert "\n" not in text


def test_an_empty_message_names_the_error() -> None:
    assert one_line(TimeoutError()) == "TimeoutError"
