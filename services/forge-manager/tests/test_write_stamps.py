"""Recognising our own applied writes by their stamps."""

from __future__ import annotations

from forge_manager.lease import LeaseRecord
from forge_manager.write_stamps import SentWrites


def record(holder: str | None, stamp: str | None) -> LeaseRecord:
    return LeaseRecord(holder, "7", 15, stamp, 0)


def test_a_record_with_our_identity_and_stamp_is_ours_from_when_it_was_sent() -> None:
    sent = SentWrites()
    sent.sent("s1", 10.0)
    sent.sent("s2", 12.0)
    assert sent.sent_at(record("me", "s1"), "me") == 10.0
    assert sent.sent_at(record("me", "s2"), "me") == 12.0


def test_our_stamp_under_another_identity_or_another_stamp_is_not_ours() -> None:
    sent = SentWrites()
    sent.sent("s1", 10.0)
    assert sent.sent_at(record("other", "s1"), "me") is None
    assert sent.sent_at(record("me", "s0"), "me") is None
    assert sent.sent_at(record(None, "s1"), "me") is None  # a release is not a holding write
    assert sent.sent_at(record("me", None), "me") is None
    assert sent.sent_at(None, "me") is None


def test_only_the_last_few_stamps_are_kept() -> None:
    sent = SentWrites(keep=2)
    for i in range(3):
        sent.sent(f"s{i}", float(i))
    assert sent.sent_at(record("me", "s0"), "me") is None
    assert sent.sent_at(record("me", "s2"), "me") == 2.0
