"""deploy/: the dashboard and alerts use only metrics the bot exports; the container and cluster
examples set only real settings and run only commands that exist. (Nothing is built or applied here.)
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from e2e.support import local_stack

from bot.__main__ import _parser
from bot.config import Settings
from bot.metrics import Metrics, exported_names

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

SETTINGS = {str(f.validation_alias) for f in Settings.model_fields.values()}
EXPORTED = exported_names(Metrics().registry)
# Labels the bot puts on its series, plus what Prometheus adds and histogram_quantile needs.
LABELS = {"action", "code", "method", "error", "outcome", "state", "account", "le", "instance", "job"}
# Set for the Python runtime and pip inside the image, not for the bot.
RUNTIME_ENV = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}


def _subcommands() -> set[str]:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    return set(sub.choices or ())  # type: ignore[arg-type]


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


def check_promql(expr: str) -> None:
    """Every metric named is exported; every label grouped or matched on exists; nothing else is read."""
    names = set(re.findall(r"\bvpnbot_\w+", expr))
    assert names, f"names no vpn-bot metric: {expr}"
    assert names <= EXPORTED, f"{sorted(names - EXPORTED)} not exported (expr: {expr})"
    # A selector is NAME{…} or NAME[…]: every one must be ours (no node_exporter, no `up`).
    selectors = set(re.findall(r"\b([a-zA-Z_:][\w:]*)\s*[{\[]", expr)) - {"by", "without"}
    assert selectors <= EXPORTED, f"reads {sorted(selectors - EXPORTED)} (expr: {expr})"
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
        check_promql(rule["expr"])
    # What the issue asks for: stuck in waiting_gateway, error rate by code, throttling.
    stuck = alerts["VpnBotOperationStuckWaitingGateway"]
    assert 'state="waiting_gateway"' in stuck["expr"]
    assert _minutes(stuck["for"]) * 60 > Settings().delete_timeout_seconds
    assert "by (code)" in alerts["VpnBotVpcApiErrorRate"]["expr"]
    assert "Throttling" in alerts["VpnBotVpcThrottled"]["expr"]


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


def test_dockerfile_is_slim_non_root_and_runs_vpn_bot_serve() -> None:
    steps = dockerfile()
    assert re.fullmatch(r"python:3\.1[1-9]-slim", steps[0][1]), steps[0]
    runs = [args for op, args in steps if op == "RUN"]
    assert any(re.match(r"pip install \.(\s|$)", r) for r in runs)
    for run in runs:
        for command in re.split(r"&&|;", run):
            assert shlex.split(command)[0] in {"pip", "useradd"}, command
    [user] = [args for op, args in steps if op == "USER"]
    assert user not in {"root", "0"}
    assert any("--uid " + user in r for r in runs)  # the user exists
    env = set().union(*(_env_names(args) for op, args in steps if op == "ENV"))
    assert env - RUNTIME_ENV <= SETTINGS, env - RUNTIME_ENV - SETTINGS
    [cmd] = [args for op, args in steps if op == "CMD"]
    assert json.loads(cmd) == ["vpn-bot", "serve"]
    [health] = [args for op, args in steps if op == "HEALTHCHECK"]
    health_cmd = json.loads(health.split("CMD", 1)[1])
    check_command(health_cmd)
    copied = [args.split() for op, args in steps if op == "COPY"]
    assert ["deploy/healthcheck.py", health_cmd[1]] in copied
    for source, *_ in copied:  # paths relative to the build context, the repository root
        assert (ROOT / source).exists(), source


async def _healthcheck(env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(DEPLOY / "healthcheck.py"), env={"PATH": "/usr/bin:/bin", **env}
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


@pytest.mark.process
async def test_healthcheck_script_asks_the_right_port(sqlite_url: str) -> None:
    """The image's HEALTHCHECK: 0 for a healthy bot on VPNBOT_PORT (HTTP mode), 1 for nothing there."""
    async with local_stack(database_url=sqlite_url) as stack:
        port = stack.bot.url.rsplit(":", 1)[1]
        assert await _healthcheck({"VPNBOT_PORT": port}) == 0
        assert await _healthcheck({"VPNBOT_PORT": "1"}) == 1
        # Socket Mode: the metrics port wins; without SLACK_APP_TOKEN it is not used.
        socket_env = {"SLACK_APP_TOKEN": "xapp-x", "VPNBOT_PORT": "1", "VPNBOT_METRICS_PORT": port}
        assert await _healthcheck(socket_env) == 0
        assert await _healthcheck({"VPNBOT_PORT": "1", "VPNBOT_METRICS_PORT": port}) == 1


@pytest.mark.process
async def test_healthcheck_script_fails_on_503() -> None:
    """/healthz says 503 while the store is unreachable; the container is then unhealthy."""

    async def unhealthy(_: web.Request) -> web.Response:
        return web.json_response({"ok": False, "store": "unreachable"}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", unhealthy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        assert await _healthcheck({"VPNBOT_PORT": str(runner.addresses[0][1])}) == 1
    finally:
        await runner.cleanup()


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


def test_kubernetes_example_deployment_probes_secret_and_budget() -> None:
    docs = {
        d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8"))
    }
    assert set(docs) >= {"Secret", "Deployment", "PodDisruptionBudget"}
    assert set(docs["Secret"]["stringData"]) <= SETTINGS
    deployment = docs["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    pod = deployment["template"]["spec"]
    [container] = pod["containers"]
    check_command(container["command"] + container.get("args", []))
    assert {e["name"] for e in container.get("env", [])} <= SETTINGS
    assert container["envFrom"] == [{"secretRef": {"name": docs["Secret"]["metadata"]["name"]}}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
        port = container[probe]["httpGet"]["port"]
        assert port in {p["name"] for p in container["ports"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    annotations = deployment["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    budget = docs["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] == 1
