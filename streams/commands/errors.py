"""How the command line fails: one line on stderr and a non-zero exit, never a traceback.

A closed output pipe (``streams topologies | head -1``) ends the command quietly with status
141, as the shell reports a Unix tool stopped by SIGPIPE. The process keeps ignoring SIGPIPE
(Python's default): a worker's sockets must see EPIPE as an error, not die of a signal.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import click
from click.utils import PacifyFlushWrapper

from .. import registry
from ..config import ConfigError
from ..devtools import broker
from ..kafka import admin
from ..state.store import StateCorrupted, StateStorageError, StoreLocked

BROKEN_PIPE_EXIT = 128 + 13  # 128 + SIGPIPE


class UserError(click.ClickException):
    """A failure explained in one line."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class OptionError(click.UsageError):
    """A bad command line (an option's value, an unknown command) in one line, exit 2: click
    would print the usage and a hint around it."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


_EXPECTED = (registry.UnknownTopology, registry.TopologyLoadError, ConfigError,
             broker.BrokerError, admin.BrokerUnavailable, StoreLocked, StateCorrupted,
             StateStorageError, LookupError, FileNotFoundError, PermissionError, TimeoutError)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def silence_stdout() -> None:
    """Point stdout at /dev/null: what Python still holds buffered for the closed pipe is
    dropped instead of failing again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test runner's buffer)
        pass
    finally:
        os.close(devnull)


class Group(click.Group):
    """A command group whose commands fail in one line (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if isinstance(exc, OptionError):
                raise
            raise OptionError(exc.format_message()) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            silence_stdout()
            raise click.exceptions.Exit(BROKEN_PIPE_EXIT) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None  # 128 + SIGINT, no traceback
        except _EXPECTED as exc:
            raise UserError(first_line(exc)) from exc
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - no traceback
            if os.environ.get("STREAMS_DEBUG"):
                raise
            name = type(exc).__name__
            text = str(exc).strip().splitlines()
            raise UserError(f"{name}: {text[0]}" if text else name) from exc


class MainGroup(Group):
    """The top-level group: also flushes stdout before exiting, so that output still buffered
    for a pipe that closed meanwhile ends the command quietly (status 141) as well."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, **kwargs)
            code: Any = 0
        except SystemExit as exc:
            result, code = None, exc.code
            if isinstance(sys.stdout, PacifyFlushWrapper):  # click met the closed pipe itself
                code = BROKEN_PIPE_EXIT
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
            code = BROKEN_PIPE_EXIT
        if kwargs.get("standalone_mode", True):
            sys.exit(code)
        return result
