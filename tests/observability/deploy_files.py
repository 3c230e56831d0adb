"""The deployment files under test: compose, Prometheus config and rules, dashboards.

No Docker engine runs here, so ``resolved_compose`` does what ``docker compose config``
would for this file: it interpolates ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+other}`` and ``$$`` from a given
environment (the shell's and an ``--env-file``'s) and keeps the services enabled under
the given profiles. ``command_params`` parses a service's command with the
``switchboard`` CLI itself, so an unknown option or a bad value fails as it would in
the container.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import typer
import typer.core
import typer.main
import yaml

from tests.support.procs import REPO

COMPOSE = REPO / "docker-compose.yml"
DEMO_ENV = REPO / "deploy" / "demo.env"
SWITCHBOARD_IMAGE = "switchboard:latest"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"

_METRIC = re.compile(r"\b(switchboard[a-zA-Z0-9_:]*)")
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


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


# Compose ---------------------------------------------------------------------------------


class ComposeError(ValueError):
    """What ``docker compose`` would refuse the file with (a required variable unset)."""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a Compose env file (blank lines and ``#`` comments skipped)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ComposeError(f"{path}:{number}: not KEY=VALUE")
        values[key.strip()] = value.strip().strip("\"'")
    return values


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match["escaped"]:
        return "$"
    name = match["bare"] or match["name"]
    op, arg = match["op"], match["arg"] or ""
    value = env.get(name)
    present = value is not None and (value != "" or not (op or "").startswith(":"))
    if op in (":?", "?") and not present:
        raise ComposeError(f"required variable {name} is missing a value: {arg}")
    if op in (":-", "-"):
        return value if present and value is not None else arg
    if op in (":+", "+"):
        return arg if present else ""
    return value or ""


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """``node`` (parsed YAML) with every ``$`` expression of its strings replaced."""
    if isinstance(node, str):
        return _VARIABLE.sub(lambda match: _substitute(match, env), node)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def resolved_compose(env: Mapping[str, str], profiles: Iterable[str] = ()) -> dict[str, Any]:
    """The services ``docker compose --profile P up`` would run, interpolated from ``env``."""
    compose = interpolate(load_yaml(COMPOSE), env)
    active = set(profiles)
    services: dict[str, Any] = {
        name: service
        for name, service in compose["services"].items()
        if not service.get("profiles") or active & set(service["profiles"])
    }
    return services


def switchboard_cli() -> typer.core.TyperGroup:
    """The ``switchboard`` command as the click underneath typer sees it."""
    from switchboard.cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group


def command_params(argv: list[str]) -> dict[str, Any]:
    """``switchboard ARGV`` parsed by the CLI's ``make_context`` without running it.

    The parameters the command would run with; raises the CLI's own error (a
    ``typer.TyperException``: no such command or option, a bad value) where running it
    would fail to start.
    """
    group = switchboard_cli()
    root = typer.Context(group, info_name="switchboard")
    command = group.get_command(root, argv[0]) if argv else None
    if command is None:
        raise typer.BadParameter(f"no such command: {argv[:1]}", root)
    if isinstance(command, typer.core.TyperGroup):
        raise typer.BadParameter(f"{argv[0]} is a group of commands, not a service", root)
    with command.make_context(argv[0], list(argv[1:]), parent=root) as context:
        params: dict[str, Any] = context.params
    return params
