"""The deployment files under docker/: parsed and cross-checked without a Docker engine.

What is checked is the wiring that breaks a deployment silently: the API pointing at the
database and the Ray head, the GPU reservation, the data volume shared by the API and the
workers, commands that our CLI really has, one Ray/Python version everywhere, and the
KubeRay manifest's kinds and GPU limits. The entrypoint scripts run here with stub
`ray`/`searchsvc` commands. If a Docker client with Compose v2 is installed, it parses the
compose file too (it needs no engine for that).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from searchsvc.cli import build_parser

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the pyproject cross-check is skipped
    tomllib = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
KUBERAY = DOCKER / "kuberay-cluster.yaml"
CONTROL_PLANE = DOCKER / "Dockerfile.control-plane"
GPU_WORKER = DOCKER / "Dockerfile.gpu-worker"
DATA_DIR = "/srv/searchsvc/data"
INPUTS_DIR = "/srv/searchsvc/inputs"


# ---- helpers ---------------------------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (the forms compose.yaml uses), applied recursively."""
    if isinstance(value, dict):
        return {interpolate(k, env): interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op and op.endswith("?") and unset:
            raise KeyError(f"{name}: {arg}")
        if op and op.endswith("-") and unset:
            return arg
        return current or ""

    return _VAR.sub(substitute, value)


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return interpolate(raw, env_file(ENV_EXAMPLE) if env is None else env)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; continuation lines joined, comments dropped."""
    instructions, buffer = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not buffer):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        text = buffer + stripped
        buffer = ""
        keyword, _, rest = text.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def args_of(path: Path) -> dict[str, str]:
    """Defaults of every ARG (the last one wins, as in a multi-stage build's stages)."""
    values = {}
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            values[key] = value
    return values


def exec_form(rest: str) -> list[str]:
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def last(path: Path, keyword: str) -> str:
    found = [rest for kw, rest in dockerfile_instructions(path) if kw == keyword]
    assert found, f"{path.name} has no {keyword}"
    return found[-1]


def assert_is_serve(argv: list[str]) -> None:
    """argv starts with `searchsvc serve` and our CLI parses it as the serve command."""
    assert argv[:2] == ["searchsvc", "serve"], argv
    args = build_parser().parse_args(argv[1:])
    assert args.func.__name__ == "cmd_serve"
    assert args.host == "0.0.0.0"


def kuberay_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(KUBERAY.read_text(encoding="utf-8")) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_list(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


# ---- compose.yaml ----------------------------------------------------------------------


def test_compose_has_the_four_services_and_needs_a_password() -> None:
    compose = load_compose()
    assert set(compose["services"]) == {"postgres", "ray-head", "api", "gpu-worker"}
    env = env_file(ENV_EXAMPLE)
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        load_compose(env)


def test_compose_api_points_at_postgres_and_the_ray_head() -> None:
    compose = load_compose()
    env = env_file(ENV_EXAMPLE)
    api = compose["services"]["api"]["environment"]
    assert api["SEARCHSVC_DATABASE_URL"] == (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}")
    assert api["SEARCHSVC_RAY_ADDRESS"] == "ray-head:6380"
    assert api["SEARCHSVC_DATA_DIR"] == DATA_DIR
    postgres = compose["services"]["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == (env["POSTGRES_USER"], env["POSTGRES_DB"])
    assert_is_serve(compose["services"]["api"]["command"])
    assert any(p.endswith(":8000") for p in compose["services"]["api"]["ports"])


def test_compose_ray_head_uses_port_6380_has_no_cpus_or_gpus_and_a_dashboard() -> None:
    head = load_compose()["services"]["ray-head"]
    command = head["command"]
    assert command[:3] == ["ray", "start", "--head"]
    for flag in ("--port=6380", "--num-cpus=0", "--num-gpus=0", "--dashboard-host=0.0.0.0",
                 "--dashboard-port=8265", "--block"):
        assert flag in command
    assert "deploy" not in head  # no GPU reservation on the head
    assert any(p.endswith(":8265") for p in head["ports"])


def test_compose_start_order_uses_health_conditions() -> None:
    services = load_compose()["services"]
    assert services["api"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                             "ray-head": {"condition": "service_healthy"}}
    assert services["gpu-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    for name in ("postgres", "ray-head"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_compose_gpu_worker_reserves_one_nvidia_gpu_and_joins_the_head() -> None:
    worker = load_compose()["services"]["gpu-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert int(devices[0]["count"]) == 1
    env = worker["environment"]
    assert env["RAY_HEAD_ADDRESS"] == "ray-head:6380"
    assert int(env["RAY_NUM_GPUS"]) == int(devices[0]["count"])  # Ray offers what Docker reserved
    assert json.loads(env["RAY_RESOURCES"])  # a custom resource, valid JSON
    assert worker["build"]["dockerfile"] == "docker/Dockerfile.gpu-worker"
    # Raising GPU_WORKER_GPUS moves both numbers together.
    more = load_compose({**env_file(ENV_EXAMPLE), "GPU_WORKER_GPUS": "4"})["services"]["gpu-worker"]
    assert more["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "4"
    assert more["environment"]["RAY_NUM_GPUS"] == "4"


def test_compose_data_and_inputs_are_shared_by_api_and_workers_at_the_same_paths() -> None:
    compose = load_compose()

    def mounts(service: str) -> dict[str, str]:
        result = {}
        for volume in compose["services"][service]["volumes"]:
            source, target = volume.split(":")[:2]
            result[target] = source
        return result

    api, worker = mounts("api"), mounts("gpu-worker")
    assert api[DATA_DIR] == worker[DATA_DIR]
    assert api[DATA_DIR] in compose["volumes"]  # a named volume, declared
    assert api[INPUTS_DIR] == worker[INPUTS_DIR]
    assert compose["services"]["gpu-worker"]["environment"]["SEARCHSVC_DATA_DIR"] == DATA_DIR


def test_compose_builds_both_images_with_the_same_version_pins() -> None:
    services = load_compose()["services"]
    api_args = services["api"]["build"]["args"]
    head = services["ray-head"]
    assert head["image"] == services["api"]["image"]  # the head runs the control-plane image
    assert head["build"]["dockerfile"] == services["api"]["build"]["dockerfile"] == "docker/Dockerfile.control-plane"
    worker_args = services["gpu-worker"]["build"]["args"]
    for key in ("PYTHON_VERSION", "RAY_VERSION", "TORCH_VERSION"):
        assert api_args[key] == worker_args[key], key


def test_compose_every_ray_participant_shares_the_ray_token() -> None:
    services = load_compose()["services"]
    token = env_file(ENV_EXAMPLE)["RAY_AUTH_TOKEN"]
    for name in ("ray-head", "api", "gpu-worker"):
        env = services[name]["environment"]
        assert (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]) == ("token", token), name
    without = env_file(ENV_EXAMPLE)
    del without["RAY_AUTH_TOKEN"]
    with pytest.raises(KeyError, match="RAY_AUTH_TOKEN"):
        load_compose(without)


def test_no_credentials_in_compose_and_the_real_env_file_is_ignored() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert "change-me" not in text
    assert re.search(r"POSTGRES_PASSWORD: \$\{POSTGRES_PASSWORD:\?", text)
    assert re.search(r"RAY_AUTH_TOKEN: \$\{RAY_AUTH_TOKEN:\?", text)
    ignored = (DOCKER / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored


# ---- Dockerfiles -----------------------------------------------------------------------


def test_control_plane_image_runs_searchsvc_serve_as_non_root() -> None:
    instructions = dockerfile_instructions(CONTROL_PLANE)
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert all(f.startswith("python:${PYTHON_VERSION}-slim") for f in froms)
    assert args_of(CONTROL_PLANE)["PYTHON_VERSION"].startswith("3.11.")
    user = last(CONTROL_PLANE, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert last(CONTROL_PLANE, "EXPOSE") == "8000"
    assert "/healthz" in last(CONTROL_PLANE, "HEALTHCHECK")
    entrypoint, cmd = exec_form(last(CONTROL_PLANE, "ENTRYPOINT")), exec_form(last(CONTROL_PLANE, "CMD"))
    assert entrypoint == ["tini", "--", "searchsvc-entrypoint"]
    assert_is_serve(cmd)
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert runs.index("torch==${TORCH_VERSION}") < runs.index(".[postgres]")  # torch (CPU) first


def test_gpu_worker_image_is_cuda_based_and_runs_ray_start() -> None:
    args = args_of(GPU_WORKER)
    assert re.match(r"nvidia/cuda:12\.\d+(\.\d+)?-(cudnn-)?runtime-ubuntu", args["CUDA_BASE_IMAGE"])
    froms = [rest for kw, rest in dockerfile_instructions(GPU_WORKER) if kw == "FROM"]
    assert froms[-1].startswith("${CUDA_BASE_IMAGE}")
    # The interpreter comes from the control plane's base image: the same Python patch.
    assert froms[0].startswith("python:${PYTHON_VERSION}-slim-bookworm")
    assert exec_form(last(GPU_WORKER, "ENTRYPOINT")) == ["tini", "--", "searchsvc-gpu-worker"]
    assert last(GPU_WORKER, "USER").split(":")[0] not in ("root", "0")
    script = (DOCKER / "entrypoint-gpu-worker.sh").read_text(encoding="utf-8")
    assert "ray start" in script and "RAY_HEAD_ADDRESS" in script and "--block" in script


def test_ray_python_and_torch_pins_agree_everywhere_and_satisfy_pyproject() -> None:
    from packaging.specifiers import SpecifierSet

    control, gpu = args_of(CONTROL_PLANE), args_of(GPU_WORKER)
    env = env_file(ENV_EXAMPLE)
    build_args = load_compose()["services"]["api"]["build"]["args"]
    rayclusters = one(kuberay_docs(), "RayCluster")
    for key in ("RAY_VERSION", "PYTHON_VERSION", "TORCH_VERSION"):
        assert control[key] == gpu[key] == env[key] == build_args[key], key
    assert rayclusters["spec"]["rayVersion"] == control["RAY_VERSION"]
    if tomllib is None:
        return
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    ranges = {re.split(r"[\[<>=!~ ]", d, maxsplit=1)[0]: d for d in deps}
    for package, version in (("ray", control["RAY_VERSION"]), ("torch", control["TORCH_VERSION"])):
        spec = SpecifierSet(re.sub(r"^[A-Za-z0-9_.-]+(\[[^\]]*\])?", "", ranges[package]))
        assert version in spec, f"{package} {version} is outside pyproject's {spec}"


def test_dockerfile_copy_sources_exist_and_pass_the_dockerignore() -> None:
    for dockerfile in (CONTROL_PLANE, GPU_WORKER):
        allowed = [line[1:].rstrip("/") for line in
                   Path(f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines() if line.startswith("!")]
        for keyword, rest in dockerfile_instructions(dockerfile):
            if keyword != "COPY" or "--from=" in rest:
                continue
            sources = [p for p in shlex.split(rest) if not p.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                assert source.rstrip("/") in allowed, f"{dockerfile.name}: {source} is excluded from the context"


# ---- entrypoint scripts (with stub commands) -----------------------------------------


def _stub_bin(tmp_path: Path, *names: str) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in names:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n', encoding="utf-8")
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


def _run_script(script: str, args: list[str], bin_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("sh") is None:
        pytest.skip("no POSIX shell")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SEARCHSVC_", "RAY_"))}
    return subprocess.run(["sh", str(DOCKER / script), *args], check=False, capture_output=True, text=True, timeout=30,
                          env={**clean, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"})


def test_control_plane_entrypoint_joins_ray_with_no_resources_then_serves(tmp_path: Path) -> None:
    bin_dir, log = _stub_bin(tmp_path, "ray", "searchsvc")
    result = _run_script("entrypoint-control-plane.sh", ["searchsvc", "serve", "--host", "0.0.0.0"], bin_dir,
                         {"SEARCHSVC_RAY_ADDRESS": "ray-head:6380"})
    assert result.returncode == 0, result.stderr
    calls = log.read_text(encoding="utf-8").splitlines()
    assert calls[0].startswith("ray start --address=ray-head:6380 --num-cpus=0 --num-gpus=0")
    assert calls[-1] == "searchsvc serve --host 0.0.0.0"


def test_control_plane_entrypoint_passes_other_commands_straight_through(tmp_path: Path) -> None:
    bin_dir, log = _stub_bin(tmp_path, "ray", "searchsvc")
    result = _run_script("entrypoint-control-plane.sh", ["ray", "start", "--head", "--block"], bin_dir,
                         {"SEARCHSVC_RAY_ADDRESS": "ray-head:6380"})
    assert result.returncode == 0, result.stderr
    assert log.read_text(encoding="utf-8").splitlines() == ["ray start --head --block"]
    log.unlink()
    result = _run_script("entrypoint-control-plane.sh", ["searchsvc", "serve"], bin_dir, {})  # local Ray
    assert log.read_text(encoding="utf-8").splitlines() == ["searchsvc serve"]


def test_gpu_worker_entrypoint_builds_the_ray_start_command(tmp_path: Path) -> None:
    bin_dir, log = _stub_bin(tmp_path, "ray")
    env = {"RAY_HEAD_ADDRESS": "ray-head:6380", "RAY_NUM_GPUS": "2", "RAY_RESOURCES": '{"gpu_worker": 100}'}
    result = _run_script("entrypoint-gpu-worker.sh", [], bin_dir, env)
    assert result.returncode == 0, result.stderr
    words = log.read_text(encoding="utf-8").split()
    assert words[:2] == ["ray", "start"]
    for flag in ("--address=ray-head:6380", "--block", "--num-gpus=2", '--resources={"gpu_worker":', "100}"):
        assert flag in words
    log.unlink()
    _run_script("entrypoint-gpu-worker.sh", [], bin_dir, {**env, "RAY_NUM_GPUS": "all"})
    assert "--num-gpus" not in log.read_text(encoding="utf-8")  # "all": Ray detects them
    missing = _run_script("entrypoint-gpu-worker.sh", [], bin_dir, {})
    assert missing.returncode != 0 and "RAY_HEAD_ADDRESS" in missing.stderr


# ---- kuberay-cluster.yaml --------------------------------------------------------------

_RAYCLUSTER_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                    "autoscalerOptions", "headServiceAnnotations", "suspend", "authOptions"}
_HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
_WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams",
                 "template", "scaleStrategy", "suspend", "idleTimeoutSeconds"}


def test_kuberay_manifest_has_the_expected_kinds() -> None:
    docs = kuberay_docs()
    assert sorted((d["apiVersion"], d["kind"]) for d in docs) == sorted([
        ("ray.io/v1", "RayCluster"), ("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "PersistentVolumeClaim")])


def test_kuberay_head_has_a_dashboard_and_no_gpus_and_workers_have_one() -> None:
    cluster = one(kuberay_docs(), "RayCluster")
    spec = cluster["spec"]
    assert set(spec) <= _RAYCLUSTER_SPEC and set(spec["headGroupSpec"]) <= _HEAD_GROUP
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["rayStartParams"]["num-gpus"] == "0" and head["rayStartParams"]["num-cpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container.get("resources", {}).get("limits", {})
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265}
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert set(group) <= _WORKER_GROUP
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # KubeRay wants strings
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        custom = json.loads(json.loads(group["rayStartParams"]["resources"]))  # a quoted JSON string
        assert custom and all(v > 0 for v in custom.values())
    for params in [head["rayStartParams"], *(g["rayStartParams"] for g in groups)]:
        assert all(isinstance(v, str) for v in params.values())


def test_kuberay_control_plane_points_at_the_head_service_and_reads_a_secret() -> None:
    docs = kuberay_docs()
    cluster, deployment, service = one(docs, "RayCluster"), one(docs, "Deployment"), one(docs, "Service")
    gcs_port = cluster["spec"]["headGroupSpec"]["rayStartParams"].get("port", "6379")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = env_list(container)
    assert env["SEARCHSVC_RAY_ADDRESS"]["value"] == f"{cluster['metadata']['name']}-head-svc:{gcs_port}"
    assert "secretKeyRef" in env["SEARCHSVC_DATABASE_URL"]["valueFrom"]
    # The API pod is a Ray node and a driver: it presents the cluster's token.
    auth = cluster["spec"]["authOptions"]
    assert auth["mode"] == "token" and env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": auth["secretName"], "key": "auth_token"}
    assert env["SEARCHSVC_DATA_DIR"]["value"] == DATA_DIR
    assert_is_serve(container["args"])
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])


def test_kuberay_every_pod_that_trains_or_serves_mounts_the_shared_rwx_volume() -> None:
    docs = kuberay_docs()
    pvc, cluster, deployment = one(docs, "PersistentVolumeClaim"), one(docs, "RayCluster"), one(docs, "Deployment")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    pod_specs = [g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]]
    pod_specs.append(deployment["spec"]["template"]["spec"])
    for pod in pod_specs:
        claims = {v["name"] for v in pod["volumes"]
                  if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]}
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"] if m["name"] in claims}
        assert DATA_DIR in mounts and not mounts[DATA_DIR].get("readOnly")
        assert INPUTS_DIR in mounts


# ---- the docker client, where there is one ------------------------------------------


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    if subprocess.run([docker, "compose", "version"], check=False, capture_output=True, timeout=60).returncode != 0:
        pytest.skip("the docker client has no compose plugin")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
