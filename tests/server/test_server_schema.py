"""Schemathesis against the server's own OpenAPI schema, with a fixed, derandomized budget per
operation: no 5xx for any generated request, and every response matches the schema (status code,
content type, body)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rvqkit import Codec  # noqa: E402
from rvqkit.server import ServerSettings, create_app  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(meta_24k):
    codec = Codec.from_pretrained(meta_24k[1])
    # small limits keep fuzzed requests cheap (and exercise the 413 paths); schemathesis sends
    # Host: testserver
    app = create_app(
        codec, ServerSettings(max_upload_bytes=200_000, max_duration_s=2.0, trusted_hosts=("testserver",))
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(checks=CHECKS)
