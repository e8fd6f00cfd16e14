"""Every file in deploy/ is checked: configs validate, manifests parse and agree.

No container engine or cluster runs here, so the files are checked statically:
each example config passes ``check-config``; the Dockerfile, compose file,
Kubernetes manifests and systemd unit parse, and every port, path, command,
secret and config key they name exists in the code or in the file they point at.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from receiver import cli
from receiver.cli._common import load
from receiver.cli._errors import ExitCode
from receiver.settings import Settings
from receiver.store.sqlite import sqlite_path
from sinks import sink_types
from tests.conftest import require_service, require_tool
from tests.deploy import test_observability
from tests.deploy.test_sentinel_templates import SENTINEL_FILES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLES = sorted((DEPLOY / "examples").glob("*.toml"))
MANIFESTS = sorted((DEPLOY / "k8s").rglob("*.yaml"))
UNIT = DEPLOY / "systemd" / "bighub-siem.service"
ENV_REF = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")
# One stand-in for every secret: long enough for webhook secrets and tokens, and valid
# as a 32-byte hex key where a sink wants one (the S3 signing key).
SECRET_VALUE = "5ec2e7" + "0" * 58
PROBE_PATHS = {"livenessProbe": "/healthz", "startupProbe": "/healthz", "readinessProbe": "/readyz"}


def covered_files() -> set[Path]:
    """The files the tests below check; anything else in deploy/ fails the last test."""
    return {
        *EXAMPLES,
        *MANIFESTS,
        DEPLOY / "Dockerfile",
        DEPLOY / "Dockerfile.dockerignore",
        DEPLOY / "compose.yaml",
        DEPLOY / "compose.env.example",
        UNIT,
        *SENTINEL_FILES,  # checked in test_sentinel_templates.py
        DEPLOY / "local-base.sh",  # run by tests/container (make test-container)
        *test_observability.files(),
    }


# -- helpers ----------------------------------------------------------------------------


def check_config(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Settings:
    """Run ``bighub-siem check-config`` on ``text`` with its env: secrets set."""
    names = set(ENV_REF.findall(text))
    for key in [k for k in os.environ if k.startswith("BIGHUB_SIEM_")]:
        monkeypatch.delenv(key)  # the developer's own overrides must not leak in
    for name in names:
        monkeypatch.setenv(name, SECRET_VALUE)
    data = tomllib.loads(text)
    missing = sorted({s["type"] for s in data.get("sinks", [])} - set(sink_types()))
    if missing:
        require_service(
            False,
            f"sink type(s) {', '.join(missing)}",
            "built into the merged tree; this checkout does not register them",
        )
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    code = cli.main(["check-config", "--config", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith("config ok:")
    return load(str(path))


def cli_args_valid(argv: list[str]) -> None:
    """``argv`` parses as a bighub-siem command line (subcommand, options, choices)."""
    try:
        cli._parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of saying no
        raise AssertionError(f"not a valid bighub-siem command line: {argv}") from exc


def spool_dir(settings: Settings) -> Path | None:
    url = settings.store.url
    return sqlite_path(url).parent if url.startswith("sqlite:///") else None


# -- example configs --------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_passes_check_config(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each deploy/examples/*.toml validates with only its env: secrets provided."""
    settings = check_config(path.read_text(), tmp_path, monkeypatch, capsys)
    for secret in settings.ingress.secrets:  # the examples never hold a literal secret
        assert secret.get_secret_value() == SECRET_VALUE


# -- Dockerfile ---------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    return instructions[last:]


def test_dockerfile_is_slim_non_root_with_healthcheck_and_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slim bases, a non-root user, and a healthcheck/volume/ports that match its config."""
    steps = dockerfile()
    defaults = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    for instr, args in steps:
        if instr == "FROM":  # the default base; BASE_IMAGE may name another (local-base.sh)
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], args.split()[0])
            assert "-slim" in image
    final = final_stage(steps)
    users = [a for i, a in final if i == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    env = dict(
        re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in final if i == "ENV").replace("\\", ""))
    )
    copies = [shlex.split(a) for i, a in final if i == "COPY" and not a.startswith("--from")]
    config_src = next(c[0] for c in copies if c[1] == env["BIGHUB_SIEM_CONFIG"])
    settings = check_config((ROOT / config_src).read_text(), tmp_path, monkeypatch, capsys)
    volumes = [v for i, a in final if i == "VOLUME" for v in yaml.safe_load(a)]
    assert spool_dir(settings) is not None
    assert str(spool_dir(settings)) in volumes
    exposed = {int(p) for i, a in final if i == "EXPOSE" for p in a.split()}
    assert {settings.ingress.port, settings.admin.port} <= exposed
    health = " ".join(a for i, a in final if i == "HEALTHCHECK")
    assert f"127.0.0.1:{settings.ingress.port}/healthz" in health
    assert settings.ingress.host == "0.0.0.0"  # reachable through the published port
    entry = yaml.safe_load(next(a for i, a in final if i == "ENTRYPOINT"))
    cmd = yaml.safe_load(next(a for i, a in final if i == "CMD"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert entry == ["bighub-siem"]
    assert "bighub-siem" in pyproject["project"]["scripts"]
    cli_args_valid(cmd)


def test_dockerfile_copies_and_installs_what_exists() -> None:
    """COPY sources exist and survive the .dockerignore; pip extras exist in pyproject."""
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else stays out of the build context
    for instr, args in dockerfile():
        if instr == "COPY" and not args.startswith("--from"):
            for src in shlex.split(args)[:-1]:
                assert (ROOT / src).exists(), src
                assert src.rstrip("/") in kept, f"{src} is excluded by Dockerfile.dockerignore"
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    wanted = re.findall(r"\.\[([a-z0-9,_-]+)\]", (DEPLOY / "Dockerfile").read_text())
    assert wanted
    for group in wanted:
        assert set(group.split(",")) <= extras


# -- compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services_have_healthchecks_and_valid_dependencies() -> None:
    """Long-running services have healthchecks; dependencies name real services."""
    services = compose()["services"]
    assert {"postgres", "kafka", "minio", "receiver"} <= set(services)
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if svc.get("restart") != "no":
            assert "healthcheck" in svc, f"{name} runs on without a healthcheck"
        for dep, how in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert how["condition"] in conditions
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep]
            if how["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no"
    build = services["receiver"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_receiver_config_matches_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mounted config validates and points at the stack's hosts, ports, topic, bucket."""
    services = compose()["services"]
    receiver = services["receiver"]
    env = receiver["environment"]
    mounts = [v.split(":") for v in receiver["volumes"]]
    source = next(DEPLOY / m[0] for m in mounts if m[1] == env["BIGHUB_SIEM_CONFIG"])
    text = source.read_text()
    assert set(ENV_REF.findall(text)) <= set(env), "a secret the config needs is not passed in"
    settings = check_config(text, tmp_path, monkeypatch, capsys)
    published = {p.rsplit(":", 1)[-1] for p in receiver["ports"]}
    assert {str(settings.ingress.port), str(settings.admin.port)} <= published
    assert "@postgres:5432/" in settings.store.url
    db = services["postgres"]["environment"]
    assert f"{db['POSTGRES_USER']}@postgres:5432/{db['POSTGRES_DB']}" in settings.store.url
    sinks = {s.type: s.model_dump() for s in settings.sinks}
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for server in sinks["kafka"]["bootstrap_servers"]:
        assert server in advertised
    assert sinks["kafka"]["topic"] in services["kafka-init"]["command"]
    assert sinks["s3"]["endpoint_url"] == "http://minio:9000"
    assert services["minio-init"]["entrypoint"][-1] == f"local/{sinks['s3']['bucket']}"
    assert services["migrate"]["command"] == ["migrate"]
    cli_args_valid(services["migrate"]["command"])
    cli_args_valid(receiver["command"])


def test_compose_variables_are_all_in_the_env_example() -> None:
    """Every ${VAR} compose interpolates has a line in compose.env.example (which may also
    set Compose's own COMPOSE_* variables)."""
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (DEPLOY / "compose.yaml").read_text()))
    example = (DEPLOY / "compose.env.example").read_text()
    defined = {
        line.split("=", 1)[0]
        for line in example.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert used == {name for name in defined if not name.startswith("COMPOSE_")}


def test_compose_file_is_accepted_by_compose_v1() -> None:
    """`docker-compose config` of Compose 1.29 (Debian 12's; v2 accepts what it does) is
    happy with the file and the example .env; it needs no Docker engine."""
    tool = require_tool("docker-compose", "apt-get install docker-compose (make test does)")
    version = subprocess.run(
        [tool, "version", "--short"], capture_output=True, text=True, timeout=60, check=False
    ).stdout.strip()
    assert tuple(int(x) for x in version.split(".")[:2]) >= (1, 29), version
    files = ["-f", str(DEPLOY / "compose.yaml"), "--env-file", str(DEPLOY / "compose.env.example")]
    done = subprocess.run(
        [tool, *files, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# -- Kubernetes -------------------------------------------------------------------------------


def k8s_docs(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


K8S_DIRS = sorted({p.parent for p in MANIFESTS})


def test_every_manifest_parses_with_kind_and_name() -> None:
    """Each YAML document under deploy/k8s is a Kubernetes object with a name."""
    assert {d.name for d in K8S_DIRS} == {"sqlite", "postgres"}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"], path
            assert doc["kind"], path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path


@pytest.mark.parametrize("directory", K8S_DIRS, ids=[d.name for d in K8S_DIRS])
def test_kustomization_lists_every_manifest(directory: Path) -> None:
    """``kubectl apply -k`` picks up every file of the directory."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    others = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == others
    assert [i["name"] for i in kustomization["images"]] == ["bighub-siem"]


def config_maps_in(directory: Path) -> dict[str, dict[str, Any]]:
    objects = [doc for _, doc in k8s_docs(directory)]
    return {d["metadata"]["name"]: d for d in objects if d["kind"] == "ConfigMap"}


def role_of(args: list[str]) -> str:
    """The ``serve --role`` a container runs (``all`` when not given)."""
    return args[args.index("--role") + 1] if "--role" in args else "all"


def workload_config(template: dict[str, Any], config_maps: dict[str, Any]) -> str:
    """The config text a pod template mounts from a ConfigMap (at $BIGHUB_SIEM_CONFIG)."""
    (container,) = template["spec"]["containers"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    env = {e["name"]: e for e in container["env"]}
    config_file = Path(env["BIGHUB_SIEM_CONFIG"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_file.parent))
    config_map = config_maps[volumes[mount["name"]]["configMap"]["name"]]
    text: str = config_map["data"][config_file.name]
    return text


def pod_templates(directory: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for _, doc in k8s_docs(directory):
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield doc, doc["spec"]["template"]


@pytest.mark.parametrize("directory", K8S_DIRS, ids=[d.name for d in K8S_DIRS])
def test_workloads_agree_with_their_config(
    directory: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ports, probes, args, secrets, mounts and the spool volume match the ConfigMap."""
    config_maps = config_maps_in(directory)
    workloads = list(pod_templates(directory))
    assert workloads
    for workload, template in workloads:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["image"] == "bighub-siem"  # rewritten by kustomize images:
        cli_args_valid(container["args"])
        env = {e["name"]: e for e in container["env"]}
        text = workload_config(template, config_maps)
        assert set(ENV_REF.findall(text)) <= set(env), "a secret the config needs is not set"
        for e in env.values():
            if "valueFrom" in e:
                assert e["valueFrom"]["secretKeyRef"]["name"] == "bighub-siem"
        settings = check_config(text, tmp_path, monkeypatch, capsys)
        requests = container["resources"]["requests"]
        assert requests["cpu"]
        assert requests["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        if workload["kind"] == "Job":
            assert container["args"] == ["migrate"]
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["admin"] == settings.admin.port
        role = role_of(container["args"])
        if role != "dispatch":
            assert ports["http"] == settings.ingress.port
        probe_port = "admin" if role == "dispatch" else "http"
        for probe, path in PROBE_PATHS.items():
            assert container[probe]["httpGet"] == {"path": path, "port": probe_port}
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(settings.admin.port)
        spool = spool_dir(settings)
        if spool is None:  # PostgreSQL: stateless pods, any number of them
            assert workload["kind"] == "Deployment"
            continue
        assert workload["kind"] == "StatefulSet"
        assert workload["spec"]["replicas"] == 1  # one process owns a SQLite spool
        claims = {c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]}
        spool_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(spool))
        assert spool_mount["name"] in claims


@pytest.mark.parametrize("directory", K8S_DIRS, ids=[d.name for d in K8S_DIRS])
def test_services_and_budgets_select_real_pods(directory: Path) -> None:
    """Service and PodDisruptionBudget selectors match pods; target ports exist on them."""
    pods = [t for w, t in pod_templates(directory) if w["kind"] != "Job"]

    def matching(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [t for t in pods if selector.items() <= t["metadata"]["labels"].items()]

    for _, doc in k8s_docs(directory):
        if doc["kind"] == "Service":
            chosen = matching(doc["spec"]["selector"])
            assert chosen, doc["metadata"]["name"]
            for port in doc["spec"]["ports"]:
                for t in chosen:
                    names = {p["name"] for p in t["spec"]["containers"][0]["ports"]}
                    assert port["targetPort"] in names, (doc["metadata"]["name"], port)
        if doc["kind"] == "PodDisruptionBudget":
            assert matching(doc["spec"]["selector"]["matchLabels"]), doc["metadata"]["name"]
        if doc["kind"] == "StatefulSet":
            governing = [
                d
                for _, d in k8s_docs(directory)
                if d["kind"] == "Service" and d["metadata"]["name"] == doc["spec"]["serviceName"]
            ]
            assert governing
            assert governing[0]["spec"]["clusterIP"] == "None"


# -- coverage -------------------------------------------------------------------------------


def test_every_file_in_deploy_is_checked() -> None:
    """A new file in deploy/ needs a check here."""
    present = {p for p in DEPLOY.rglob("*") if p.is_file()}
    assert present - covered_files() == set()
