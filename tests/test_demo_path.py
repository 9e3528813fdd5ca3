"""The demo's embedded path: SQLite file and filesystem broker, no servers at all."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.local", VAR_DIR=str(tmp_path), REDIS_URL="")
    return env


def _manage(env, *args) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_demo_path_sqlite_migrates_seeds_and_serves_login(demo_env, tmp_path):
    _manage(demo_env, "migrate", "--no-input", "-v0")
    output = _manage(demo_env, "seed_demo")
    assert "ada@acme.example" in output
    assert (tmp_path / "db.sqlite3").exists()
    assert (tmp_path / "broker" / "queue").is_dir()

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=demo_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = _get_when_up(f"http://127.0.0.1:{port}/accounts/login/", server)
        assert 'name="password"' in body
        assert 'name="csrfmiddlewaretoken"' in body
        health = _get_when_up(f"http://127.0.0.1:{port}/healthz", server)
        assert health == "ok"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _get_when_up(url: str, server: subprocess.Popen, attempts: int = 100) -> str:
    """Poll until the server accepts connections (it is starting in another process)."""
    for _ in range(attempts):
        if server.poll() is not None:
            raise AssertionError(f"server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
                assert response.status == 200
                return response.read().decode()
        except ConnectionError:
            time.sleep(0.1)
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionError):
                raise
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")
