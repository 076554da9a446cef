"""The deployment files: hadolint on the Dockerfiles, `docker-compose config` on the stack, the
entrypoint's dispatch and health checks, and the build context (COPY sources, .dockerignore).

No Docker engine is needed. hadolint (the dev extra) and docker-compose 1.29 (`make
system-deps`) are; with ``CI=true`` a missing one fails the run instead of skipping.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.queues import Queue
from service.settings import Settings

pytestmark = pytest.mark.deployment

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "api": ROOT / "docker" / "api.Dockerfile",
    "worker-gpu": ROOT / "docker" / "worker-gpu.Dockerfile",
}
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
COMPOSE_FILE = ROOT / "docker-compose.yml"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"
CPU_CONSTRAINTS = ROOT / "constraints" / "cpu.txt"

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "minio",
    "minio-init",
    "migrate",
    "api",
    "housekeeper",
    "worker-cpu",
    "worker-cpu-passes",
    "worker-gpu",
    "flower",
}
APP_SERVICES = ("api", "housekeeper", "worker-cpu", "worker-cpu-passes", "worker-gpu")
ONE_SHOT_SERVICES = ("migrate", "minio-init")
# Variables the compose file interpolates: unset, so the defaults are what is checked.
COMPOSE_VARIABLES = (
    "POSTGRES_PASSWORD",
    "WORKER_CPU_QUEUES",
    "UNLEARN_REGISTRY",
    "UNLEARN_TAG",
    "UNLEARN_LOG_LEVEL",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "S3_BUCKET",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
)


def require_tool(name: str, path: str | None) -> str:
    """The tool's path; a missing tool fails under CI and skips elsewhere."""
    if path is not None:
        return path
    message = f"{name} is not installed (hadolint: the dev extra; docker-compose: make system-deps)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)
    return require_tool("hadolint", found)


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)


# --- Dockerfiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(dockerfile: Path) -> list[Instruction]:
    """Logical instructions: continuation lines joined, comments and blank lines dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return result


def final_stage(dockerfile: Path) -> list[Instruction]:
    found = instructions(dockerfile)
    last_from = max(i for i, ins in enumerate(found) if ins.keyword == "FROM")
    return found[last_from:]


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for ins in instructions(dockerfile):
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for pair in ins.args.split():
                name, sep, value = pair.partition("=")
                if sep:
                    env[name] = value
    return env


def runtime_user(dockerfile: Path) -> tuple[int, int]:
    """UID and GID of the last USER before CMD in the final stage; they must be numbers."""
    stage = final_stage(dockerfile)
    cmd_at = max(i for i, ins in enumerate(stage) if ins.keyword == "CMD")
    users = [ins.args for ins in stage[:cmd_at] if ins.keyword == "USER"]
    assert users, f"{dockerfile.name}: no USER in the final stage"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert match, f"{dockerfile.name}: USER {users[-1]} is not numeric UID:GID"
    return int(match[1]), int(match[2])


def copy_sources(dockerfile: Path) -> list[str]:
    """Sources of every COPY from the build context (not from another stage)."""
    sources: list[str] = []
    for ins in instructions(dockerfile):
        if ins.keyword != "COPY":
            continue
        words = ins.args.split()
        if any(word.startswith("--from=") for word in words):
            continue
        sources += [word for word in words if not word.startswith("--")][:-1]
    return sources


def healthcheck_command(dockerfile: Path) -> list[str] | None:
    """The HEALTHCHECK's command (JSON form), or None when the image has none."""
    for ins in final_stage(dockerfile):
        if ins.keyword == "HEALTHCHECK":
            assert ins.args != "NONE", f"{dockerfile.name}: HEALTHCHECK NONE"
            form = re.search(r"\bCMD\s+(\[.*\])\s*$", ins.args)
            assert form, f"{dockerfile.name}: HEALTHCHECK CMD is not in JSON form"
            command: list[str] = yaml.safe_load(form[1])
            return command
    return None


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_passes_with_the_repository_config(name: str) -> None:
    result = run(
        [
            hadolint(),
            "--config",
            str(HADOLINT_CONFIG),
            "--failure-threshold",
            "warning",
            "--no-color",
            str(DOCKERFILES[name]),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_still_rejects_a_root_shell_form_image(tmp_path: Path) -> None:
    """The config ignores nothing that matters: a named USER and shell-form CMD fail it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nUSER unlearn\nCMD unlearn serve\n")
    result = run([hadolint(), "--config", str(HADOLINT_CONFIG), "--no-color", str(bad)])
    assert result.returncode != 0
    assert "DL3025" in result.stdout and "DL3066" in result.stdout


def test_both_images_run_as_the_same_non_root_user() -> None:
    """One UID owns the shared artifacts volume, whichever image first mounts it."""
    users = {name: runtime_user(path) for name, path in DOCKERFILES.items()}
    assert all(uid > 0 and gid > 0 for uid, gid in users.values()), users
    assert len(set(users.values())) == 1, users


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_creates_its_artifacts_dir_owned_by_its_user(name: str) -> None:
    dockerfile = DOCKERFILES[name]
    stage = final_stage(dockerfile)
    artifacts = env_of(stage)["UNLEARN_ARTIFACTS_DIR"]
    uid, gid = runtime_user(dockerfile)
    runs = " && ".join(ins.args for ins in stage if ins.keyword == "RUN")
    assert f"mkdir -p {artifacts}" in runs
    owned = re.findall(rf"chown -R {uid}:{gid} (\S+)", runs)
    assert any(artifacts == p or artifacts.startswith(p.rstrip("/") + "/") for p in owned), owned


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_has_a_json_healthcheck_and_entrypoint(name: str) -> None:
    stage = final_stage(DOCKERFILES[name])
    assert healthcheck_command(DOCKERFILES[name]) == [
        "/usr/local/bin/entrypoint.sh",
        "healthcheck",
    ]
    entrypoints = [ins.args for ins in stage if ins.keyword == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["/usr/local/bin/entrypoint.sh"]


def constraint_pin(package: str) -> str:
    for line in CPU_CONSTRAINTS.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in {CPU_CONSTRAINTS}")


def test_api_image_installs_the_cpu_build_of_torch() -> None:
    dockerfile = DOCKERFILES["api"]
    assert arg_defaults(dockerfile)["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = [ins.args for ins in instructions(dockerfile) if ins.keyword == "RUN"]
    torch_runs = [r for r in runs if re.search(r"\btorch\b", r)]
    assert torch_runs, "no RUN installs torch"
    assert all('--index-url "$TORCH_INDEX_URL"' in r for r in torch_runs), torch_runs
    # Everything comes from the lock, with hashes; the project itself adds nothing to it.
    pip_installs = [r for r in runs if "pip install" in r]
    assert torch_runs[0] == pip_installs[0], "torch must come from the CPU index before ."
    assert "-r requirements/torch-cpu.txt" in torch_runs[0], torch_runs
    assert_installs_exactly_the_lock(pip_installs)


def assert_installs_exactly_the_lock(pip_installs: list[str]) -> None:
    locked = [r for r in pip_installs if "-r requirements/" in r]
    assert any("-r requirements/run.txt" in r for r in locked), pip_installs
    assert all("--require-hashes" in r and "--no-deps" in r for r in locked), locked
    rest = [r for r in pip_installs if r not in locked]
    assert rest and all("--no-deps" in r and "--no-build-isolation" in r for r in rest), rest


def test_gpu_image_pairs_a_cuda_base_with_the_torch_build_of_that_cuda() -> None:
    dockerfile = DOCKERFILES["worker-gpu"]
    steps = [ins.args for ins in instructions(dockerfile) if ins.keyword in ("RUN", "COPY")]
    assert not any("constraints" in step or "torch-cpu" in step for step in steps), steps
    # torch (and the CUDA libraries it brings) is the image's own choice; the rest is locked.
    assert_installs_exactly_the_lock(
        [s for s in steps if "pip install" in s and "$TORCH_INDEX_URL" not in s]
    )
    defaults = arg_defaults(dockerfile)
    base = re.fullmatch(
        r"nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-ubuntu[\d.]+", defaults["CUDA_IMAGE"]
    )
    assert base, defaults["CUDA_IMAGE"]
    wheel = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", defaults["TORCH_INDEX_URL"])
    assert wheel, defaults["TORCH_INDEX_URL"]
    assert wheel[1] == base[1] + base[2], "the torch wheel's CUDA differs from the base image's"
    assert defaults["TORCH_VERSION"] == constraint_pin("torch")
    froms = [ins.args.split()[0] for ins in instructions(dockerfile) if ins.keyword == "FROM"]
    assert froms and all(image == "${CUDA_IMAGE}" for image in froms), froms


# --- build context -----------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore syntax: `*` and `?` stay within one path element, `**` spans."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether the build context leaves the path out (a pattern matching a parent counts)."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_matcher_reads_patterns_as_docker_does() -> None:
    patterns = ["var", "**/__pycache__", "*.egg-info", "!var/keep"]
    assert dockerignored("var/lineage.sqlite3", patterns)
    assert dockerignored("service/api/__pycache__/x.pyc", patterns)
    assert dockerignored("unlearn_service.egg-info/PKG-INFO", patterns)
    assert not dockerignored("var/keep", patterns)
    assert not dockerignored("service/var.py", patterns)
    assert not dockerignored("pkg/x.egg-info", patterns)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "var/lineage.sqlite3",
        ".git/HEAD",
        ".pytest_cache/v/cache/lastfailed",
        ".mypy_cache/3.11/service.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "service/__pycache__/app.cpython-311.pyc",
        "unlearn_service.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_leaves_out_local_state(path: str) -> None:
    assert dockerignored(path, dockerignore_patterns())


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_every_copy_source_exists_and_reaches_the_build(name: str) -> None:
    patterns = dockerignore_patterns()
    sources = copy_sources(DOCKERFILES[name])
    assert "docker/entrypoint.sh" in sources and "pyproject.toml" in sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{name}: COPY {source}: no such path in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in file.parts:
                continue
            assert not dockerignored(relative, patterns), f"{name}: .dockerignore drops {relative}"


# --- docker-compose.yml ----------------------------------------------------------------------


def compose_config(tmp_path: Path, *profiles: str) -> dict[str, Any]:
    """`docker-compose config` (offline, no engine), defaults interpolated, parsed."""
    binary = require_tool("docker-compose", shutil.which("docker-compose"))
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    args = [binary, "--env-file", str(env_file), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        args += ["--profile", profile]
    result = run([*args, "config"], env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_config(tmp_path_factory.mktemp("compose"))


def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = config["services"]
    return found


def dockerfile_of(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    return Path(str(build["context"])) / str(build.get("dockerfile", "Dockerfile"))


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target path -> named volume, for the service's named-volume mounts only."""
    named: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        else:
            source, target, kind = volume.get("source", ""), volume["target"], volume["type"]
        if kind == "volume" and source:
            named[target] = source
    return named


def test_compose_file_is_valid_with_and_without_the_gpu_profile(tmp_path: Path) -> None:
    for profiles in ((), ("gpu",)):
        config = compose_config(tmp_path, *profiles)
        assert set(services(config)) >= REQUIRED_SERVICES, profiles
    assert services(config)["worker-gpu"].get("profiles") == ["gpu"]


def test_start_order_follows_health_and_migration(compose: dict[str, Any]) -> None:
    svc = services(compose)

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in svc[name]["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("minio-init") == {"minio": "service_healthy"}
    for name in APP_SERVICES:
        assert conditions(name) == {
            "migrate": "service_completed_successfully",
            "minio-init": "service_completed_successfully",
            "redis": "service_healthy",
        }, name
    assert conditions("flower") == {"redis": "service_healthy"}
    for name in ("postgres", "redis", "minio"):
        assert svc[name]["healthcheck"]["test"], name


def test_app_services_run_in_production_on_postgres_and_redis(compose: dict[str, Any]) -> None:
    for name in ("migrate", *APP_SERVICES):
        env = services(compose)[name]["environment"]
        assert env["UNLEARN_ENVIRONMENT"] == "production", name
        assert env["UNLEARN_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/" in env["UNLEARN_DATABASE_URL"], name
        assert env["UNLEARN_BROKER_URL"].startswith("redis://redis:6379/"), name


def test_the_housekeeper_housekeeps_and_the_api_replicas_do_not(compose: dict[str, Any]) -> None:
    """API replicas scale without multiplying housekeeping; the housekeeper needs no API."""
    svc = services(compose)
    assert svc["housekeeper"]["command"] == ["housekeeper"]
    off = svc["api"]["environment"]["UNLEARN_API_HOUSEKEEPING"]
    assert Settings(api_housekeeping=off).api_housekeeping is False
    assert "UNLEARN_API_HOUSEKEEPING" not in svc["housekeeper"]["environment"]
    assert "api" not in svc["housekeeper"]["depends_on"]


def test_api_and_workers_share_the_object_store(compose: dict[str, Any]) -> None:
    """Artifacts live in MinIO's bucket, which minio-init creates with the services' own key:
    every app service names that bucket, that endpoint and that key, and mounts no artifact
    folder (a folder is one machine's)."""
    svc = services(compose)
    init = svc["minio-init"]["environment"]
    stores = set()
    for name in APP_SERVICES:
        env = svc[name]["environment"]
        settings = Settings(artifacts_url=env["UNLEARN_ARTIFACTS_URL"])  # validates the URL
        stores.add(
            (
                settings.artifacts_url,
                env["UNLEARN_S3_ENDPOINT_URL"],
                env["AWS_ACCESS_KEY_ID"],
                env["AWS_SECRET_ACCESS_KEY"],
            )
        )
        image_dir = env_of(final_stage(DOCKERFILES["api"]))["UNLEARN_ARTIFACTS_DIR"]
        assert image_dir not in mounts(svc[name]), f"{name} still mounts an artifact folder"
    assert stores == {
        (
            f"s3://{init['S3_BUCKET']}",
            "http://minio:9000",
            init["S3_ACCESS_KEY"],
            init["S3_SECRET_KEY"],
        )
    }, stores
    assert init["S3_ACCESS_KEY"] != svc["minio"]["environment"]["MINIO_ROOT_USER"]
    assert mounts(svc["minio"]).get("/data") in set(compose["volumes"])
    assert "artifacts" not in compose["volumes"]


def minio_init_script(compose: dict[str, Any]) -> str:
    """minio-init's shell script as the container runs it (compose turns `$$` into `$`)."""
    init = services(compose)["minio-init"]
    assert init["entrypoint"] == ["/bin/sh", "-ceu"]
    script: str = init["command"][0]
    return script.replace("$$", "$")


def test_minio_init_creates_the_bucket_and_key_idempotently(compose: dict[str, Any]) -> None:
    script = minio_init_script(compose)
    assert 'mc mb --ignore-existing "store/$S3_BUCKET"' in script
    assert 'mc admin user add store "$S3_ACCESS_KEY" "$S3_SECRET_KEY"' in script
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = run([shellcheck, "--shell=sh", "-"], input=script)
    assert result.returncode == 0, result.stdout


def test_database_lives_on_a_named_volume(compose: dict[str, Any]) -> None:
    volume = mounts(services(compose)["postgres"]).get("/var/lib/postgresql/data")
    assert volume in set(compose["volumes"])


def test_gpu_worker_reserves_a_gpu_and_builds_the_cuda_image(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        "gpu" in d.get("capabilities", []) and (d.get("count", 0) != 0 or d.get("device_ids"))
        for d in devices
    ), devices
    assert dockerfile_of(worker) == DOCKERFILES["worker-gpu"]
    for name in ("migrate", "api", "worker-cpu"):
        assert dockerfile_of(services(compose)[name]) == DOCKERFILES["api"], name


def queues_of(service: dict[str, Any]) -> set[str]:
    command: list[str] = service["command"]
    assert command[0] == "worker" and "--queues" in command
    return set(command[command.index("--queues") + 1].split(","))


def test_workers_consume_every_queue_of_their_profile(compose: dict[str, Any]) -> None:
    """Each worker runs every kind of job of its own compute profile: the CPU worker the CPU
    models', the GPU worker (on CUDA) the CUDA models', passes included."""
    svc = services(compose)
    assert queues_of(svc["worker-cpu"]) == {q.value for q in Queue}
    assert queues_of(svc["worker-cpu-passes"]) == {Queue.deletions.value}  # passes never wait
    assert queues_of(svc["worker-gpu"]) == {q.value for q in Queue}
    assert svc["worker-gpu"]["environment"]["UNLEARN_DEVICE"] == "cuda"
    assert "UNLEARN_DEVICE" not in svc["worker-cpu"]["environment"]
    assert "--pool" in svc["worker-gpu"]["command"]
    assert svc["worker-gpu"]["command"][svc["worker-gpu"]["command"].index("--pool") + 1] == "solo"


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no"
            continue
        in_compose = service.get("healthcheck", {})
        assert not in_compose.get("disable", False), name
        dockerfile = dockerfile_of(service)
        in_image = healthcheck_command(dockerfile) if dockerfile is not None else None
        assert in_compose.get("test") or in_image, f"{name} has no health check"


# --- entrypoint.sh ---------------------------------------------------------------------------


def test_entrypoint_parses() -> None:
    result = run(["sh", "-n", str(ENTRYPOINT)])
    assert result.returncode == 0, result.stderr
    # The images COPY it without --chmod: its mode in the checkout (and git) must be 0755.
    assert os.access(ENTRYPOINT, os.X_OK)
    git = shutil.which("git")
    if git is not None and (ROOT / ".git").exists():
        staged = run([git, "ls-files", "--stage", str(ENTRYPOINT.relative_to(ROOT))], cwd=ROOT)
        assert staged.stdout.startswith("100755 "), staged.stdout


def test_entrypoint_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = run([shellcheck, "--shell=sh", str(ENTRYPOINT)])
    assert result.returncode == 0, result.stdout


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """`unlearn` that logs its arguments and fails while tmp/failures counts down; no `sleep`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "unlearn").write_text(
        "#!/bin/sh\n"
        f'echo "unlearn $*" >> "{tmp_path}/calls"\n'
        f'left=$(cat "{tmp_path}/failures" 2>/dev/null || echo 0)\n'
        'if [ "$left" -gt 0 ]; then\n'
        f'    echo $((left - 1)) > "{tmp_path}/failures"; exit 3\n'
        "fi\n"
    )
    (bin_dir / "sleep").write_text("#!/bin/sh\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def entrypoint(
    args: list[str], path: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **(extra_env or {})}
    return run(["sh", str(ENTRYPOINT), *args], env=env)


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls"
    return log.read_text().splitlines() if log.exists() else []


def test_entrypoint_runs_unlearn_commands_and_programs(tmp_path: Path, fake_bin: Path) -> None:
    path = f"{fake_bin}:/usr/bin:/bin"
    assert entrypoint(["worker", "--queues", "deletions"], path).returncode == 0
    assert entrypoint([], path).returncode == 0
    assert calls(tmp_path) == ["unlearn worker --queues deletions", "unlearn serve"]
    program = entrypoint(["echo", "as is"], path)
    assert program.stdout == "as is\n"
    assert len(calls(tmp_path)) == 2


def test_migrate_retries_until_the_database_answers(tmp_path: Path, fake_bin: Path) -> None:
    path = f"{fake_bin}:/usr/bin:/bin"
    (tmp_path / "failures").write_text("2")
    assert entrypoint(["migrate"], path).returncode == 0
    assert calls(tmp_path) == ["unlearn db upgrade"] * 3


def test_migrate_gives_up(tmp_path: Path, fake_bin: Path) -> None:
    (tmp_path / "failures").write_text("99")
    result = entrypoint(["migrate"], f"{fake_bin}:/usr/bin:/bin", {"UNLEARN_MIGRATE_ATTEMPTS": "4"})
    assert result.returncode == 1
    assert calls(tmp_path) == ["unlearn db upgrade"] * 4


@pytest.fixture
def main_process(request: pytest.FixtureRequest) -> Iterator[int]:
    """A stand-in for the container's PID 1: its command line names the role."""
    role: list[str] = request.param
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "unlearn", *role]
    )
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def api_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def healthcheck(pid: int, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's check, run with this interpreter's `python` (where the project is installed)."""
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    base = {"HEALTHCHECK_PID": str(pid), "HEALTHCHECK_TIMEOUT_S": "2", "HOME": str(tmp_path)}
    return run(
        ["sh", str(ENTRYPOINT), "healthcheck"], env={"PATH": path, **base, **env}, cwd=tmp_path
    )


@pytest.mark.parametrize("main_process", [["serve"]], indirect=True)
def test_healthcheck_of_the_api_asks_healthz(
    main_process: int, api_port: int, tmp_path: Path
) -> None:
    assert healthcheck(main_process, tmp_path, {"UNLEARN_PORT": str(api_port)}).returncode == 0
    _Health.status = 503
    try:
        failing = healthcheck(main_process, tmp_path, {"UNLEARN_PORT": str(api_port)})
    finally:
        _Health.status = 200
    assert failing.returncode != 0
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_port = free.getsockname()[1]
    assert healthcheck(main_process, tmp_path, {"UNLEARN_PORT": str(closed_port)}).returncode != 0


@pytest.mark.parametrize(
    "main_process", [["worker", "--queues", "deletions"], ["housekeeper"]], indirect=True
)
def test_healthcheck_of_a_worker_or_housekeeper_asks_its_health_port(
    main_process: int, api_port: int, tmp_path: Path
) -> None:
    """Their /healthz is a thread of theirs on UNLEARN_HEALTH_PORT: it answers mid-job."""
    assert (
        healthcheck(main_process, tmp_path, {"UNLEARN_HEALTH_PORT": str(api_port)}).returncode == 0
    )
    _Health.status = 503
    try:
        failing = healthcheck(main_process, tmp_path, {"UNLEARN_HEALTH_PORT": str(api_port)})
    finally:
        _Health.status = 200
    assert failing.returncode != 0
    assert "Traceback" not in failing.stderr, failing.stderr
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_port = free.getsockname()[1]
    refused = healthcheck(main_process, tmp_path, {"UNLEARN_HEALTH_PORT": str(closed_port)})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr


@pytest.mark.parametrize("main_process", [["db", "upgrade"]], indirect=True)
def test_healthcheck_passes_a_one_shot_command(main_process: int, tmp_path: Path) -> None:
    assert healthcheck(main_process, tmp_path, {"UNLEARN_PORT": "1"}).returncode == 0


def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_tool("hadolint", None)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_tool("hadolint", None)
    assert require_tool("hadolint", "/bin/hadolint") == "/bin/hadolint"
