"""What a user installs: `python -m build` makes an sdist and a wheel (built from the sdist),
the wheel installs into a new virtualenv, and there `opspilot serve` answers and the three
examples of docs/embedding.md run, taken from the sdist.

By default the new virtualenv gets OpsPilot from the wheel only and finds its dependencies
in the project's .venv through a .pth line (no download: the check stays well under two
minutes). `OPSPILOT_TEST_CLEAN_INSTALL=1` installs the wheel with its dependencies from the
package index instead (several minutes).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SERVE_PORT = 22301  # this suite's range: 22300-22399
HOST_APP_PORT = 22302
CLEAN = os.environ.get("OPSPILOT_TEST_CLEAN_INSTALL") == "1"


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 300) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob(f"opspilot-{VERSION}-py3-none-any.whl")
    return found


@pytest.fixture(scope="module")
def sdist_root(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    (archive,) = dist.glob(f"opspilot-{VERSION}.tar.gz")
    out = tmp_path_factory.mktemp("sdist")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out / f"opspilot-{VERSION}"


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", home)
    python = home / "bin" / "python"
    if CLEAN:
        _run(python, "-m", "pip", "install", "--quiet", wheel, "pytest", "pytest-asyncio",
             timeout=1200)
        return home
    _run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel)
    # Dependencies from the project's environment; OpsPilot itself only from the wheel (a
    # path added by a .pth line does not run that path's own .pth files, so the project's
    # editable install stays out).
    target = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                  .strip())
    (target / "_opspilot_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return home


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("OPSPILOT_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _wait_for(url: str, process: subprocess.Popen[str], seconds: float = 60) -> bytes:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bytes(answer.read())
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"exited: {process.communicate()[0]}")
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"{url} did not answer: {process.communicate()[0]}")


@pytest.fixture
def serving(venv: Path, tmp_path: Path) -> Iterator[Any]:
    """Start a process; it is stopped (SIGTERM) at the end of the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str | Path) -> subprocess.Popen[str]:
        process = subprocess.Popen([str(a) for a in args], cwd=tmp_path, env=_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_the_wheel_holds_every_file_the_package_reads(wheel: Path) -> None:
    """Every non-Python file under src/opspilot that git tracks (migrations' alembic.ini,
    py.typed, any entry point's static assets) is in the wheel, with the migrations."""
    tracked = _run("git", "ls-files", "src/opspilot", cwd=ROOT).split()
    wanted = {path.removeprefix("src/") for path in tracked
              if not path.endswith(".py") or "/migrations/" in path}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert wanted - names == set()
    assert "opspilot/adapters/postgres/migrations/versions/0001_initial.py" in names


def test_opspilot_serve_runs_from_the_wheel(venv: Path, serving: Any) -> None:
    process = serving(venv / "bin" / "opspilot", "serve", "--port", str(SERVE_PORT))
    assert _wait_for(f"http://127.0.0.1:{SERVE_PORT}/healthz", process) == b'{"status":"ok"}'
    where = _run(venv / "bin" / "python", "-c", "import opspilot; print(opspilot.__file__)",
                 cwd=venv, env=_env())
    assert where.startswith(str(venv)), where  # the wheel's copy, not the source tree


def test_the_script_example_runs(venv: Path, sdist_root: Path, tmp_path: Path) -> None:
    script = shutil.copy(sdist_root / "examples" / "ingest_and_query.py", tmp_path)
    out = _run(venv / "bin" / "python", script, cwd=tmp_path, env=_env())
    assert "refused, naming the field: metrics[0].name" in out


def test_the_host_app_example_runs(venv: Path, sdist_root: Path, tmp_path: Path,
                                   serving: Any) -> None:
    script = shutil.copy(sdist_root / "examples" / "host_app.py", tmp_path)
    process = serving(venv / "bin" / "python", script, "--port", str(HOST_APP_PORT))
    base = f"http://127.0.0.1:{HOST_APP_PORT}"
    assert b'"hello"' in _wait_for(f"{base}/hello", process)
    assert _wait_for(f"{base}/observability/healthz", process) == b'{"status":"ok"}'


def test_the_pytest_fixture_example_runs(venv: Path, sdist_root: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(sdist_root / "examples" / "pytest_fixture", tmp_path / "host")
    out = _run(venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
               cwd=folder, env=_env())
    assert "3 passed" in out

