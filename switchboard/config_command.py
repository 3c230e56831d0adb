"""``switchboard config check FILE``: validate a routing policy before deploying it.

Exit 0 with a one-line summary; exit 1 with one ``FILE:LINE: field: message`` line per
problem on stderr; exit 2 for usage errors (typer's own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

config_app = typer.Typer(help="Routing policy files.", no_args_is_help=True)


@config_app.callback()
def config_group() -> None:
    """Routing policy files."""


@config_app.command("check")
def check_command(
    file: Annotated[Path, typer.Argument(help="The policy YAML file.", dir_okay=False)],
) -> None:
    """Validate a routing policy; exit 1 with the location of each error."""
    from shared.errors import PolicyError
    from shared.policy_file import load_policy, summary

    try:
        policy = load_policy(file)
    except PolicyError as err:
        for issue in err.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{file}: ok: {summary(policy)}")
