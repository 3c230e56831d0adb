"""The deployment files under test: compose, Prometheus config and rules, dashboards."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.support.procs import REPO

COMPOSE = REPO / "docker-compose.yml"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"

_METRIC = re.compile(r"\b(switchboard[a-zA-Z0-9_:]*)")


def tool(name: str) -> str:
    """Path of a Prometheus binary; fails with the way to install it when it is missing."""
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `make prometheus` (apt-get install prometheus)"
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboards() -> ModuleType:
    """``deploy/grafana/dashboards.py`` as a module (``deploy`` is not a package)."""
    name = "switchboard_deploy_dashboards"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GRAFANA_DIR / "dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in alert_rules() if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """Switchboard metric names (and recording rules) an expression refers to."""
    return set(_METRIC.findall(expr))


def shortened_rules(for_s: str = "1s") -> dict[str, Any]:
    """The alert rules with every ``for:`` shortened, for a Prometheus under test."""
    rules = load_yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_s
    return rules


def local_config(targets: dict[str, str], rules_path: Path, interval_s: int = 1) -> dict[str, Any]:
    """``prometheus.yml`` with each job's discovery replaced by a static ``host:port``."""
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"]["scrape_interval"] = f"{interval_s}s"
    config["global"]["evaluation_interval"] = f"{interval_s}s"
    config["rule_files"] = [str(rules_path)]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            jobs.append(
                {
                    "job_name": job["job_name"],
                    "scrape_timeout": f"{interval_s}s",
                    "static_configs": [{"targets": [targets[job["job_name"]]]}],
                }
            )
    config["scrape_configs"] = jobs
    return config
