"""Bearer-token checks against a token file that may rotate."""

from __future__ import annotations

import os
from pathlib import Path

from health_endpoint.auth import AuthResult, TokenFile, check_authorization


def test_missing_wrong_and_right(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("abc123\n")
    tokens = TokenFile(path)
    assert check_authorization(None, tokens) is AuthResult.MISSING
    assert check_authorization("", tokens) is AuthResult.MISSING
    assert check_authorization("Basic abc123", tokens) is AuthResult.MISSING
    assert check_authorization("Bearer ", tokens) is AuthResult.MISSING
    assert check_authorization("Bearer abc12", tokens) is AuthResult.INVALID
    assert check_authorization("Bearer abc123", tokens) is AuthResult.OK
    assert check_authorization("bearer abc123", tokens) is AuthResult.OK  # scheme is case-blind


def test_rotated_token_is_picked_up_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old")
    tokens = TokenFile(path)
    assert check_authorization("Bearer old", tokens) is AuthResult.OK
    # Secret volumes swap a symlink; a rename gives the file a new inode the same way.
    new = tmp_path / "token.new"
    new.write_text("new")
    os.replace(new, path)
    assert check_authorization("Bearer old", tokens) is AuthResult.INVALID
    assert check_authorization("Bearer new", tokens) is AuthResult.OK


def test_missing_or_empty_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    tokens = TokenFile(path)
    assert check_authorization("Bearer anything", tokens) is AuthResult.UNAVAILABLE
    path.write_text("  \n")
    assert check_authorization("Bearer ", tokens) is AuthResult.UNAVAILABLE
