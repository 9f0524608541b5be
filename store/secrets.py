"""Passwords come from the environment, a command or the system keyring, at the moment
they are needed. They are never stored in the database, never logged, never shown."""

from __future__ import annotations

import os
import subprocess
from typing import Protocol


class SecretError(Exception):
    """A password source that did not yield a password (the message never contains one)."""


class HasSecretSource(Protocol):
    """Any settings object that names where its password comes from."""

    @property
    def password_env(self) -> str | None: ...

    @property
    def password_command(self) -> str | None: ...


def run_secret_command(command: str, what: str, timeout: float = 30.0) -> str:
    """Run ``command`` through the shell and return its first output line."""
    try:
        done = subprocess.run(
            command,
            shell=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise SecretError(f"{what}: command timed out after {timeout:.0f} s: {command}") from None
    if done.returncode != 0:
        err = done.stderr.strip().splitlines()[-1:] or ["no error output"]
        raise SecretError(
            f"{what}: command failed with exit code {done.returncode}: {command} ({err[0]})"
        )
    first = done.stdout.splitlines()[:1]
    if not first or not first[0]:
        raise SecretError(f"{what}: command printed nothing: {command}")
    return first[0]


def resolve_password(source: HasSecretSource, what: str, username: str | None = None) -> str | None:
    """The password ``source`` points at, or None when it names no source at all.

    ``what`` names the setting in error messages (e.g. ``mailbox 'helpdesk'``).
    """
    if source.password_env:
        value = os.environ.get(source.password_env)
        if not value:
            raise SecretError(
                f"{what}: environment variable {source.password_env} is not set or empty; "
                f"export it before starting deskq."
            )
        return value
    if source.password_command:
        return run_secret_command(source.password_command, what)
    service = getattr(source, "password_keyring", None)
    if service:
        return _from_keyring(service, username or "", what)
    return None


def _from_keyring(service: str, username: str, what: str) -> str:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        raise SecretError(
            f"{what}: password_keyring needs the keyring package: pip install 'deskq[keyring]'"
        ) from None
    try:
        value = keyring.get_password(service, username)
    except KeyringError as exc:
        raise SecretError(f"{what}: the system keyring failed: {exc}") from None
    if not value:
        raise SecretError(
            f"{what}: no password in the keyring for service {service!r}, user {username!r}; "
            f"store one with: keyring set {service} {username}"
        )
    return str(value)
