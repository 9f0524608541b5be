"""The TUI's entry points as a user starts them: a real terminal (a pty), the demo, serve."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli.test_cli import DESKQ, demo_workspace, make_env, run


def _read_until(fd: int, needle: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not on screen; got {seen[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def test_deskq_opens_the_tui_in_a_terminal_and_q_quits(tmp_path: Path) -> None:
    env, _ = demo_workspace(tmp_path)
    env.update(
        TERM="xterm-256color", COLUMNS="100", LINES="30", DESKQ_LOG_DIR=str(tmp_path / "log")
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: deskq on the pty
        os.chdir(env["HOME"])
        os.execve(str(DESKQ), [str(DESKQ), "--no-poll"], env)
    try:
        _read_until(fd, b"Requester")  # the queue's column titles are on screen
        os.write(fd, b"q")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                break
            with contextlib.suppress(AssertionError):
                _read_until(fd, b"\x00", timeout=0.2)
        else:
            raise AssertionError("deskq did not quit on q")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.close(fd)


def test_deskq_without_a_terminal_says_what_to_use_instead(tmp_path: Path) -> None:
    env, _ = demo_workspace(tmp_path)
    result = run(env)
    assert result.returncode == 2
    assert "needs a terminal" in result.stderr and "deskq list" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_puts_the_tui_in_a_browser_page(tmp_path: Path) -> None:
    pytest.importorskip("textual_serve", reason="pip install 'deskq[web]' to serve in a browser")
    env, _ = demo_workspace(tmp_path)
    port = _free_port()
    proc = subprocess.Popen(
        [str(DESKQ), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/", timeout=5) as page:
                    html = page.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert "deskq" in html and "ws" in html  # the page that opens the app's websocket
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_with_a_bad_config_fails_before_listening(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("me = 3\n")
    result = run(make_env(tmp_path, config), "serve", "--port", str(_free_port()))
    assert result.returncode == 2
    assert "bad.toml" in result.stderr and "me" in result.stderr
