"""The node's state directory must leave room for its unix sockets (107 bytes a path)."""

from __future__ import annotations

from pathlib import Path

from tests.harness.node import LONGEST_SOCKET, SOCKET_PATH_MAX, state_dir_problem


def test_a_state_directory_whose_sockets_fit_is_accepted() -> None:
    room = SOCKET_PATH_MAX - len(LONGEST_SOCKET) - 1
    assert state_dir_problem(Path("/" + "d" * (room - 1))) is None


def test_one_byte_more_is_refused_with_the_room_there_is() -> None:
    room = SOCKET_PATH_MAX - len(LONGEST_SOCKET) - 1
    problem = state_dir_problem(Path("/" + "d" * room))
    assert problem is not None
    assert problem.endswith(f"at most {SOCKET_PATH_MAX}): use a directory of at most {room} bytes")
