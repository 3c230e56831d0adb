"""The deployment files agree with the code: compose, Prometheus, alert rules, dashboards.

``promtool`` (``make prometheus``) checks the config and the rules and runs the rules'
unit tests; the dashboards are generated from ``deploy/grafana/dashboards.py`` and
may name only metrics that ``shared.metrics`` declares.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import metrics as emulator_metrics
from shared import metrics
from tests.observability.deploy_files import (
    ALERTS,
    ALERTS_TEST,
    COMPOSE,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    alert_rules,
    dashboards,
    load_yaml,
    metric_names,
    recorded_names,
    tool,
)
from tests.support.procs import REPO, switchboard_argv

SWITCHBOARD_IMAGE = "switchboard:latest"


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return services


def switchboard_services() -> dict[str, Any]:
    return {
        name: service
        for name, service in compose_services().items()
        if service.get("image") == SWITCHBOARD_IMAGE
    }


# Metric names ------------------------------------------------------------------------


def test_metric_names_follow_prometheus_conventions() -> None:
    for name, spec in metrics.CATALOGUE.items():
        assert name.startswith("switchboard_"), name
        assert not name.endswith("_total"), f"{name}: counters are declared without _total"
        if spec.kind == "histogram":
            assert name.endswith(("_seconds", "_usd")), f"{name}: histograms carry a unit"
        if any(word in name for word in ("duration", "latency", "lag")):
            assert name.endswith("_seconds"), name
        if "cost" in name:
            assert name.endswith(("_usd", "_usd_total")), name
        assert "le" not in spec.labels
        assert spec.buckets == tuple(sorted(spec.buckets)), f"{name}: buckets out of order"
    assert metrics.CALL_SETUP.buckets[0] <= 0.001, "setup latency is a millisecond affair"
    assert 0.02 in metrics.CALL_SETUP.buckets, "the setup SLO bound must be a bucket edge"
    assert metrics.CALL_DURATION.buckets[-1] >= 3600
    assert metrics.CALL_COST.buckets[0] <= 0.001


def test_dashboard_and_alert_queries_name_only_exported_metrics() -> None:
    exported = metrics.series_names() | recorded_names()
    used: set[str] = set()
    for uid, title, expr in dashboards().all_queries():
        named = metric_names(expr)
        assert named or "up{" in expr, f"{uid} / {title}: no metric in {expr!r}"
        assert named <= exported, f"{uid} / {title}: unknown {sorted(named - exported)}"
        used |= named
    for rule in alert_rules():
        named = metric_names(rule["expr"])
        assert named <= exported, f"{rule}: unknown {sorted(named - exported)}"
        used |= named
    # Every metric we export is shown somewhere (histograms through any of their series).
    shown = {
        name
        for name, spec in metrics.CATALOGUE.items()
        if any(series in used for series in spec.series)
    }
    assert shown == set(metrics.CATALOGUE), f"not shown: {sorted(set(metrics.CATALOGUE) - shown)}"
    assert not {n for n in used if n.startswith("switchboard_emulator")}, "demo-only metrics"


def test_emulator_metric_names_do_not_collide_with_ours() -> None:
    assert not set(emulator_metrics.NAMES) & metrics.series_names()


# Dashboards --------------------------------------------------------------------------


def test_the_dashboards_on_disk_are_the_generated_ones() -> None:
    rendered = dashboards().rendered()
    on_disk = {p.name: p.read_text() for p in (GRAFANA_DIR / "dashboards").glob("*.json")}
    assert on_disk == rendered, "run `python deploy/grafana/dashboards.py`"
    uids = [json.loads(text)["uid"] for text in rendered.values()]
    assert sorted(uids) == sorted(set(uids))
    titles = {json.loads(text)["title"] for text in rendered.values()}
    assert len(titles) == 4


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = dashboards().all_queries()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, _, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_provisioning_points_at_the_dashboards_and_the_datasource() -> None:
    grafana = compose_services()["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"] if ":" in volume)
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider_file = GRAFANA_DIR / "provisioning" / "dashboards" / "switchboard.yml"
    [provider] = load_yaml(provider_file)["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    [source] = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert source["uid"] == dashboards().DATASOURCE["uid"]
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose_services()


# Prometheus --------------------------------------------------------------------------


def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    checked = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    tested = promtool("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    alerts = {rule["alert"] for rule in alert_rules() if "alert" in rule}
    fires, quiet = set(), set()
    for case in load_yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts == fires, f"never seen firing: {sorted(alerts - fires)}"
    assert alerts == quiet, f"never seen quiet: {sorted(alerts - quiet)}"
    required = {
        "SwitchboardCallSetupSLOFastBurn",
        "SwitchboardCallFailureRate",
        "SwitchboardCallRejectRate",
        "SwitchboardCostBurnOverBudget",
        "SwitchboardRunnerSaturation",
        "SwitchboardNoRunnerAlive",
        "SwitchboardWebhookSignatureFailures",
        "SwitchboardRedisUnreachable",
        "SwitchboardRealtimeApiErrors",
    }
    assert required <= alerts


def _command_port(command: list[str]) -> int:
    for flag in ("--metrics-port", "--port"):
        if flag in command:
            return int(command[command.index(flag) + 1])
    raise AssertionError(f"no port in {command}")


def test_prometheus_scrapes_every_switchboard_service_on_the_port_it_serves() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    for name, service in switchboard_services().items():
        assert name in jobs, f"service {name} is not scraped"
        [discovery] = jobs[name]["dns_sd_configs"]
        assert discovery["names"] == [name]
        assert discovery["port"] == _command_port(service["command"]), name


# Compose -----------------------------------------------------------------------------


def test_compose_builds_one_image_from_the_deploy_dockerfile() -> None:
    services = switchboard_services()
    assert set(services) == {"ingress", "worker", "runner", "emulator"}
    for name, service in services.items():
        build = service["build"]
        assert build["dockerfile"] == "deploy/Dockerfile", name
        assert (REPO / build["context"] / build["dockerfile"]).is_file()
    assert compose_services()["emulator"]["profiles"] == ["demo"]


@pytest.mark.parametrize("service", sorted(switchboard_services()))
def test_compose_commands_are_real_switchboard_commands(service: str) -> None:
    command = switchboard_services()[service]["command"]
    assert isinstance(command, list)
    ran = subprocess.run(
        switchboard_argv(*command, "--help"), capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, f"{command}: {ran.stdout}{ran.stderr}"
    assert "Usage:" in ran.stdout


def test_compose_mounts_exist_and_named_volumes_are_declared() -> None:
    compose = load_yaml(COMPOSE)
    declared = set(compose.get("volumes") or {})
    mounted_files = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
                mounted_files += 1
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    assert mounted_files >= 4
