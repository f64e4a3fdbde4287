"""Running a click command as a console entry point: exit codes, one-line errors, scrubbed output.

Shared by ``gradience-hub`` (:func:`gradience_hub.cli.main`) and ``python -m gradience_hub.scan``
(:func:`gradience_hub.scan.cli.main`), so that neither entry point imports the other: the CLI
group registers ``scan``; ``scan`` never imports the CLI group.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from gradience_hub.errors import EXIT_INTERNAL, ISSUES_URL, GradienceError
from gradience_hub.output import Secrets, guarded


def run_command(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> None:
    """Run ``command`` and map errors to exit codes and short messages (never returns).

    Everything printed goes through :mod:`gradience_hub.output`'s guard: tokens scrubbed,
    control characters dropped, no line can start a GitHub workflow command.
    """
    with guarded(output_secrets()):
        _run(command, None if argv is None else list(argv), prog_name)


def output_secrets() -> Secrets:
    """The tokens no output may show: GitHub's and the Hub's, however the Hub one was found."""
    secrets = Secrets()
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN"):
        secrets.add(os.environ.get(name))

    def hub_token() -> str | None:
        if "huggingface_hub" not in sys.modules:
            return None  # not loaded: no request was made, so no token can be echoed
        from gradience_hub.hub import token

        return token()

    secrets.add_provider(hub_token)
    return secrets


def _run(command: click.Command, argv: list[str] | None, prog_name: str) -> None:
    debug = os.environ.get("GRADIENCE_DEBUG", "") not in ("", "0")
    try:
        rv = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except GradienceError as exc:
        if debug:
            traceback.print_exc()
        for line in exc.user_lines():
            click.echo(line, err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # A bug, not bad input: exit 70 (EX_SOFTWARE) so scripts and the Action can tell them apart.
        if debug:
            traceback.print_exc()
        click.echo(f"Error: internal error: {type(exc).__name__}: {exc}", err=True)
        hint = "please report it at " + ISSUES_URL
        if not debug:
            hint += " (rerun with GRADIENCE_DEBUG=1 for the traceback)"
        click.echo(f"Hint: {hint}", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
