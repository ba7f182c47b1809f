"""The served OpenAPI document (the real contracts and routes.yaml) with the standard tools a
partner uses: the official OpenAPI 3.1 schema (openapi-spec-validator) and a client
generator (openapi-python-client) that must generate every operation."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from gateway import openapi
from gateway.surface import DESCRIPTORS, ROUTES, EdgeSpec, load_methods

pytestmark = pytest.mark.skipif(not DESCRIPTORS.exists(), reason="run `make proto` first")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    spec = EdgeSpec.load(ROUTES)
    methods = [
        m for m in load_methods(DESCRIPTORS) if m.package in spec.packages and spec.is_public(m)
    ]
    return openapi.build(methods, spec, DESCRIPTORS)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(verb, path, op) for path, ops in document["paths"].items() for verb, op in ops.items()]


def test_the_document_validates_against_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation of the official schema
    assert document["openapi"].startswith("3.1")


def test_path_parameters_are_plain_names(document: dict[str, Any]) -> None:
    for verb, path, op in _operations(document):
        for param in op.get("parameters", []):
            assert param["name"].isidentifier(), (verb, path, param["name"])
    patch = document["paths"]["/v1/organizations/{org_number}"]["patch"]
    (param,) = [p for p in patch["parameters"] if p["in"] == "path"]
    assert param["x-proto-field"] == "organization.org_number"


def test_bodies_have_real_media_types(document: dict[str, Any]) -> None:
    for verb, path, op in _operations(document):
        contents = [op.get("requestBody", {}).get("content", {})]
        contents += [r.get("content", {}) for r in op["responses"].values()]
        for content in contents:
            assert "*/*" not in content, (verb, path)
    token = document["paths"]["/connect/token"]["post"]
    assert list(token["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
    assert list(token["responses"]["200"]["content"]) == ["application/json"]
    assert "201" in document["paths"]["/connect/par"]["post"]["responses"]
    assert "303" in document["paths"]["/connect/authorize"]["post"]["responses"]


def test_oauth_endpoints_declare_rfc6749_error_bodies(document: dict[str, Any]) -> None:
    # Issue 18 (schema fuzzer): the OAuth endpoints answer {"error", "error_description"}
    # with 400/401, which the document typed as the gRPC-status Error only.
    oauth = "#/components/schemas/OAuthError"
    for path in ("/connect/token", "/connect/par", "/connect/revoke", "/connect/introspect"):
        responses = document["paths"][path]["post"]["responses"]
        for status in ("400", "401"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert {"$ref": oauth} in schema["anyOf"], (path, status)
    for verb in ("get", "post"):
        assert "400" in document["paths"]["/connect/authorize"][verb]["responses"]
    assert document["components"]["schemas"]["OAuthError"]["required"] == ["error"]
    # The upstream login callback's errors are pages for the user, the FHIR routes' are
    # OperationOutcomes (schema fuzzer, issue 18).
    callback = document["paths"]["/connect/callback"]["get"]["responses"]
    assert set(callback["default"]["content"]) == {"text/html", "application/json"}
    for path, verb in (("/v1/fhir/DiagnosticReport", "post"), ("/v1/fhir/Observation", "get")):
        content = document["paths"][path][verb]["responses"]["default"]["content"]
        assert "application/fhir+json" in content, path
    results = document["paths"]["/v1/results:search"]["post"]["responses"]
    assert "400" not in results  # gRPC-status errors only ("default")


def test_a_generated_python_client_has_every_operation(
    document: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "openapi.json"
    source.write_text(json.dumps(document))
    cli = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert cli, "openapi-python-client is a dev dependency"
    out = tmp_path / "client"
    run = subprocess.run(
        [cli, "generate", "--path", str(source), "--output-path", str(out), "--meta", "none"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING" not in run.stdout, run.stdout  # a dropped operation or response
    generated = set()
    for module in (out / "api").rglob("*.py"):
        tree = ast.parse(module.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "sync_detailed" for n in tree.body):
            generated.add(module.stem)
    assert len(generated) == len(_operations(document))
