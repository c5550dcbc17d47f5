"""Crash points for fault-injection tests: make the dangerous windows reachable.

Setting ``JETLOOM_CRASH_AT=<point>`` in a worker's environment makes the process kill itself
(SIGKILL, no cleanup) the first time it reaches that point. Points:

- ``after_append``: a workflow task's atomic append committed; projection and ack not done.
- ``before_ack``: the projection is written; the work messages are not acknowledged yet.
- ``activity_before_result``: an activity returned; its result is not published yet.
- ``activity_before_ack``: the result is published; the activity task is not acknowledged.
"""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("JETLOOM_CRASH_AT")
"""Read once: the environment is the process's, set before it starts."""


def crash_point(name: str) -> None:
    """Kill this process at once if ``JETLOOM_CRASH_AT`` names this point."""
    if name == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
