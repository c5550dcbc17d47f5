"""The official Dapr JS SDK (``@dapr/dapr``) against ``jetloom serve-http``, with no shim.

``tests/dapr/js/workflow_client.js`` is a plain Dapr JS program: it finds its "sidecar" at
``DAPR_HTTP_PORT`` (the SDK waits on ``GET /v1.0/metadata``), then starts, reads, raises to,
pauses, resumes, terminates and purges instances, a string input sent as text. The SDK is
installed with npm once into a cache directory outside the repository; the test is skipped
when node or npm is missing, or when npm cannot install the SDK (no registry).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from engine import WorkflowClient
from tests.cli_workflows import build_runtime
from tests.http.test_serve_http_process import serve_http_process

JS = Path(__file__).resolve().parent / "js"
SDK_VERSION = json.loads((JS / "package.json").read_text())["dependencies"]["@dapr/dapr"]

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are not installed: the Dapr JS SDK check needs them "
    "(e.g. apt-get install nodejs npm)",
)


@pytest.fixture(scope="session")
def dapr_js_modules() -> Path:
    """node_modules holding @dapr/dapr, installed with npm on first use and kept."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = cache / "jetloom-tests" / f"dapr-js-{SDK_VERSION}"
    modules = home / "node_modules"
    if not (modules / "@dapr" / "dapr" / "package.json").exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(JS / "package.json", home / "package.json")
        try:
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=home, check=True, capture_output=True, text=True, timeout=300,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            output = getattr(exc, "stderr", "") or ""
            pytest.skip(f"npm could not install @dapr/dapr {SDK_VERSION}: {output[-500:]}")
    return modules


class TestDaprJsSdk:
    async def test_workflow_client_works_against_serve_http(
        self, nats_url: str, prefix: str, client: WorkflowClient, dapr_js_modules: Path
    ) -> None:
        """Start (a string input as text/plain), get, pause (SUSPENDED on return), resume,
        raise (a string event), a JSON input, terminate and purge all work from the SDK."""
        async with build_runtime(nats_url, prefix), serve_http_process(
            nats_url, prefix
        ) as (api, _):
            env = {
                **os.environ,
                "DAPR_HTTP_PORT": str(urlparse(api.base_url).port),
                "NODE_PATH": str(dapr_js_modules),
            }
            node = await asyncio.create_subprocess_exec(
                "node", str(JS / "workflow_client.js"), prefix, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(node.communicate(), 120)
        assert 0 == node.returncode, err.decode()[-3000:]
        assert {
            "started": f"js-{prefix}",
            "running": "RUNNING",
            "after_pause": "SUSPENDED",
            "after_resume": "RUNNING",
            "completed": "COMPLETED",
            "input": '"hi"',
            "output": '{"order":"hi","approved":"yes"}',
            "doubled": "42",
            "terminated": "TERMINATED",
            "after_purge": "gone",
        } == json.loads(out.decode().strip().splitlines()[-1])
