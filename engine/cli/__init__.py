"""The ``jetloom`` command line: host workflows, serve Dapr's HTTP API, inspect and steer instances.

``jetloom dev app.py`` hosts every ``WorkflowRuntime`` found in a module (with an embedded
nats-server unless a NATS URL is given); ``serve-http`` serves Dapr's workflow HTTP API
(engine/http/); ``start``, ``status``, ``history``, ``watch``, ``raise``, ``terminate``,
``pause``, ``resume``, ``purge``, ``list`` and ``stats`` talk to instances through a
``WorkflowClient``. On a terminal, output is rich tables and colours; when stdout is not a
terminal, with ``--no-color`` or NO_COLOR, it is plain text (stable for scripts), and ``--json``
is machine-readable everywhere. Every failure is one ``error: ...`` line on stderr and exit
code 1 (usage mistakes exit 2, as with any argparse program); ``JETLOOM_DEBUG=1`` shows
tracebacks.

The modules: ``entry_point`` (``main``), ``parser`` (options and subcommands), ``options``
(option values), ``connecting`` (NATS, failing fast), ``output`` (tables, JSON, panels,
durations), ``history`` (events as rows), ``instances`` (the commands on instances), ``watch``,
``stats``, ``serve_http`` and ``dev``.
"""

from engine.cli.entry_point import main
from engine.cli.parser import build_parser

__all__ = ["build_parser", "main"]
