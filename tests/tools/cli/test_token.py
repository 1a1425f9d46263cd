"""``twopc token new``: a token, and the configuration that accepts it by its hash."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from compose.supervisor import twopc_command
from coordinator.auth import Authenticator
from coordinator.config import load
from twopc_core.tokens import token_hash


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(twopc_command("token", "new", *args), capture_output=True, text=True, timeout=60)


def test_a_new_token_comes_with_its_hash_and_roles_and_the_configuration_holds_only_the_hash() -> None:
    made = _run("--name", "orders-service", "--role", "client", "--role", "reader", "--json")
    assert made.returncode == 0, made.stderr
    entry = json.loads(made.stdout)
    assert entry["token"].startswith("twopc_") and len(entry["token"]) > 40
    assert (entry["sha256"], entry["roles"]) == (token_hash(entry["token"]), ["client", "reader"])
    toml = _run("--name", "orders-service", "--role", "client").stdout
    assert "[[auth.tokens]]" in toml and 'roles = ["client"]' in toml


def test_the_env_lines_make_a_coordinator_accept_the_token_they_give_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = _run("--name", "pipeline", "--role", "client", "--env")
    assert made.returncode == 0, made.stderr
    shell = subprocess.run(
        ["bash", "-c", f'{made.stdout}\nprintf "%s\\n%s" "$TWOPC_TOKEN" "$TWOPC_AUTH__TOKENS"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    token, accepted = shell.stdout.split("\n", 1)
    monkeypatch.setenv("TWOPC_AUTH__TOKENS", accepted)
    principal = Authenticator(load().auth, {}).authenticate({"Authorization": f"Bearer {token}"}, "GET", "/", b"")
    assert (principal.name, sorted(principal.roles)) == ("pipeline", ["client"])


def test_a_role_that_does_not_exist_is_refused() -> None:
    made = _run("--name", "x", "--role", "admin")
    assert made.returncode == 2 and "admin" in made.stderr
