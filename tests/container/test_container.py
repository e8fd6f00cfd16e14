"""deploy/Dockerfile, built and run with podman (``make test-container``).

Not part of the default pytest run (pyproject ignores tests/container): the first build
takes minutes. The base image is ``$BIGHUB_SIEM_BASE_IMAGE`` (default the Dockerfile's
python:3.12-slim); when it cannot be pulled, deploy/local-base.sh builds one from Debian
packages. Timings of each step are written to build/container-timings.json.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_tool
from tests.harness import ADMIN_TOKEN, ROOT, SECRET, free_port

DEFAULT_BASE = "python:3.12-slim"
LOCAL_BASE = "localhost/bighub-siem-base:bookworm"
IMAGE = "localhost/bighub-siem:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
GRACE_SECONDS = 30  # what Kubernetes and systemd give before SIGKILL
TIMINGS = ROOT / "build" / "container-timings.json"

# A first build (local base image, every wheel downloaded) takes minutes.
pytestmark = pytest.mark.timeout(1800)


def podman() -> str:
    return require_tool(
        "podman", "apt-get install podman buildah mmdebstrap runc (make test-container does)"
    )


def run(*argv: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


@dataclass
class Built:
    base: str
    runtime: list[str]  # podman's global options for `run` (see run_options)
    options: list[str]  # `podman run` options
    timings: dict[str, float] = field(default_factory=dict)


def base_image(tool: str, timings: dict[str, float]) -> str:
    """The requested base if it is here or can be pulled; else the local Debian base."""
    wanted = os.environ.get("BIGHUB_SIEM_BASE_IMAGE", DEFAULT_BASE)
    if run(tool, "image", "exists", wanted, check=False).returncode == 0:
        return wanted
    started = time.monotonic()
    pulled = run(tool, "pull", wanted, timeout=300, check=False)
    timings["pull_base_seconds"] = round(time.monotonic() - started, 1)
    if pulled.returncode == 0:
        return wanted
    if run(tool, "image", "exists", LOCAL_BASE, check=False).returncode != 0:
        require_tool("mmdebstrap", "apt-get install mmdebstrap")
        started = time.monotonic()
        run("bash", str(ROOT / "deploy" / "local-base.sh"), LOCAL_BASE, timeout=900)
        timings["local_base_seconds"] = round(time.monotonic() - started, 1)
    return LOCAL_BASE


def run_options(tool: str) -> tuple[list[str], list[str]]:
    """The first way of running a container that works on this host.

    Plain ``podman run`` first. Some hosts (hybrid cgroups, no CAP_SYS_RESOURCE: VMs
    and sandboxes) need runc and rlimits no higher than podman's own: podman lowers
    its RLIMIT_NPROC to 32768 at start, so a container cannot get more.
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    limits = ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]
    candidates = [([], []), (["--runtime", "runc"], []), (["--runtime", "runc"], limits)]
    errors = []
    for runtime, options in candidates:
        done = run(tool, *runtime, "run", "--rm", *options, IMAGE, "--help", check=False)
        if done.returncode == 0:
            return runtime, options
        errors.append(done.stderr.strip()[-300:])
    raise AssertionError("no way to run a container here:\n" + "\n".join(errors))


@pytest.fixture(scope="module")
def built() -> Built:
    """The image, built from deploy/Dockerfile (layers cached by podman between runs)."""
    tool = podman()
    timings: dict[str, float] = {}
    base = base_image(tool, timings)
    # chroot isolation runs the build steps without an OCI runtime or cgroups, so it
    # works where containers cannot be started the usual way (checked below anyway).
    build = [tool, "build", "--isolation=chroot", "--format=docker"]
    if CA_BUNDLE.exists():  # trust what the host trusts (a TLS-inspecting proxy's CA)
        build += [
            "-v",
            f"{CA_BUNDLE}:/run/host-ca.crt:ro",
            "--build-arg",
            "PIP_CERT=/run/host-ca.crt",
        ]
    dangling_before = set(run(tool, "images", "-q", "--filter", "dangling=true").stdout.split())
    started = time.monotonic()
    run(
        *build,
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--ignorefile",
        str(ROOT / "deploy" / "Dockerfile.dockerignore"),
        "-f",
        str(ROOT / "deploy" / "Dockerfile"),
        "-t",
        IMAGE,
        str(ROOT),
        timeout=1800,
    )
    timings["build_seconds"] = round(time.monotonic() - started, 1)
    # Our own leftovers only: the build stage and the image this build replaced.
    dangling = set(run(tool, "images", "-q", "--filter", "dangling=true").stdout.split())
    for image_id in sorted(dangling - dangling_before):
        run(tool, "rmi", image_id, check=False)
    runtime, options = run_options(tool)
    return Built(base, runtime, options, timings)


@dataclass
class Container:
    name: str
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/bighub"


@pytest.fixture(scope="module")
def container(built: Built) -> Iterator[Container]:
    """The image running its default command (serve, container.toml, stdout sink)."""
    tool = podman()
    box = Container(f"bighub-siem-test-{uuid.uuid4().hex[:8]}", free_port(), free_port())
    started = time.monotonic()
    run(
        tool,
        *built.runtime,
        "run",
        "-d",
        "--name",
        box.name,
        *built.options,
        "-p",
        f"127.0.0.1:{box.port}:8080",
        "-p",
        f"127.0.0.1:{box.admin_port}:9464",
        "-e",
        f"BIGHUB_WEBHOOK_SECRET={SECRET}",
        "-e",
        f"BIGHUB_SIEM_ADMIN_TOKEN={ADMIN_TOKEN}",
        IMAGE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{box.port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            logs = run(tool, "logs", box.name, check=False)
            raise AssertionError(f"container did not become healthy:\n{logs.stderr[-3000:]}")
        built.timings["start_to_healthy_seconds"] = round(time.monotonic() - started, 1)
        yield box
    finally:
        run(tool, "rm", "-f", box.name, check=False)
        TIMINGS.parent.mkdir(exist_ok=True)
        TIMINGS.write_text(json.dumps({"base": built.base, **built.timings}, indent=2) + "\n")


def test_send_test_gets_202s_and_events_come_out(container: Container) -> None:
    """`bighub-siem send-test` against the container: three 202s, three records on stdout."""
    env = {**os.environ, "T_WEBHOOK_SECRET": SECRET}
    send_test = [sys.executable, "-m", "receiver", "send-test", "--url", container.url]
    done = subprocess.run(
        [*send_test, "--secret", "env:T_WEBHOOK_SECRET"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ids = re.findall(r"(evt_[0-9a-f]+)\s+202 ", done.stdout)
    assert len(ids) == 3
    deadline = time.monotonic() + 30
    records: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        out = run(podman(), "logs", container.name).stdout  # the container's stdout only
        records = [json.loads(line) for line in out.splitlines() if '"schema_version"' in line]
        if {r["event_id"] for r in records} >= set(ids):
            break
        time.sleep(0.2)
    assert {r["event_id"] for r in records} >= set(ids)


def test_runs_as_a_non_root_user(container: Container) -> None:
    """The server (PID 1) runs as uid 10001, not root."""
    status = run(podman(), "exec", container.name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, flags=re.MULTILINE)
    assert uids is not None
    assert uids.groups() == ("10001", "10001")


def test_healthcheck_and_metrics(built: Built, container: Container) -> None:
    """The image's HEALTHCHECK passes; /metrics answers on the admin port."""
    run(podman(), *built.runtime, "healthcheck", "run", container.name)
    metrics = httpx.get(f"http://127.0.0.1:{container.admin_port}/metrics", timeout=5)
    assert "bighub_siem_events_accepted_total" in metrics.text


def test_stop_exits_zero_within_the_grace_period(built: Built, container: Container) -> None:
    """`podman stop` (SIGTERM) ends the container with exit code 0 well before SIGKILL."""
    tool = podman()
    started = time.monotonic()
    run(tool, *built.runtime, "stop", "-t", str(GRACE_SECONDS), container.name, timeout=120)
    elapsed = time.monotonic() - started
    built.timings["stop_seconds"] = round(elapsed, 1)
    assert elapsed < GRACE_SECONDS
    code = run(tool, "inspect", container.name, "--format", "{{.State.ExitCode}}").stdout.strip()
    assert code == "0"
    assert "service_stopped" in run(tool, "logs", container.name).stderr
