"""Schemathesis fuzzes every endpoint of the OpenAPI schema: no 500s, answers match the schema.

The real service app (``build_service`` with a pipeline, the job scheduler's provider, the
predictor and the query engine over a fresh ``SLUICE_HOME``) runs in-process through ASGI,
once without keys (a loopback client) and once with API keys (an admin key). Each
operation gets a small, fixed number of examples so the run stays within a minute or two.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks

from sluice.api.auth import ApiKeys
from sluice.core.settings import Settings
from sluice.service.serve import build_service

PIPELINE = """\
name: live
source: {type: log, stream: events}
schema: {device_id: string, temperature: double}
sinks:
  - {type: lake, table: live}
"""
ADMIN_KEY = "schemathesis-admin-key-0123456789"
LOOPBACK = "http://127.0.0.1"


def _app(home: Path, keys: ApiKeys) -> Any:
    home.mkdir(parents=True, exist_ok=True)
    pipeline = home / "live.yaml"
    pipeline.write_text(PIPELINE)
    app, _supervisor = build_service(Settings(home=home / "state"), [pipeline])
    app.state.sluice.keys = keys
    return app


def _from_loopback(app: Any) -> Any:
    """The app as a loopback client reaches it (the ASGI test client says 'testclient' and
    names the host 'testserver', which the keyless guard refuses as a rebinding)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
            headers.append((b"host", b"127.0.0.1:5000"))
            scope = {**scope, "client": ("127.0.0.1", 50000), "headers": headers}
        await app(scope, receive, send)

    return asgi


_HOME = Path(tempfile.mkdtemp(prefix="sluice-schemathesis-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
keyless = schemathesis.openapi.from_asgi(
    "/openapi.json", _from_loopback(_app(_HOME / "keyless", ApiKeys()))
)
keyed = schemathesis.openapi.from_asgi(
    "/openapi.json", _app(_HOME / "keyed", ApiKeys.from_pairs(f"{ADMIN_KEY}:admin"))
)


FUZZ = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


# Left out: positive_data_acceptance (a schema-valid body can still hold invalid SQL or name a
# stream that does not exist: a 4xx is right) and allow_header_conformance (Starlette's 405
# lists the methods of the first route matching the path, when GET and POST of one path are
# two routes, as for /api/v1/jobs/{name}/runs).
EXCLUDED = [checks.positive_data_acceptance, checks.allow_header_conformance]


@keyless.parametrize()
@FUZZ
def test_keyless_loopback_api_conforms(case: Any) -> None:
    case.call_and_validate(base_url=LOOPBACK, excluded_checks=EXCLUDED)


@keyed.parametrize()
@FUZZ
def test_api_with_keys_conforms(case: Any) -> None:
    key = {"Authorization": f"Bearer {ADMIN_KEY}"}
    case.call_and_validate(base_url=LOOPBACK, headers=key, excluded_checks=EXCLUDED)
