"""Property-based fuzzing of every operation in ``/openapi.json`` (schemathesis 4).

Bounded: a fixed number of generated requests per operation, with a server token and with a
user token. No answer may be a 5xx, and every error answer is our JSON error shape.
"""

from __future__ import annotations

import asyncio
import json

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.server import ServerHandle, running_server

EXAMPLES_PER_OPERATION = 8


def _fuzz_operation(
    operation: schemathesis.APIOperation, base_url: str, api_key: str, token: str, examples: int
) -> tuple[int, int, list[str]]:
    label = operation.label
    sent = 0
    problems: list[str] = []
    successes: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        nonlocal sent
        params = case.path_parameters or {}
        if sent % 2 == 0 and {"type", "id"} <= set(params):
            # half the cases hit the seeded call, so bodies reach the logic behind the 404s
            case.path_parameters = {**params, "type": "default", "id": "fuzz"}
        case.query = {**(case.query or {}), "api_key": api_key}
        case.headers = {**(case.headers or {}), "Authorization": token}
        response = case.call(base_url=base_url, timeout=30)
        sent += 1
        if response.status_code < 300:
            successes.append(label)
        if response.status_code >= 500:
            problems.append(f"{label}: {response.status_code} {response.text[:300]}")
        elif response.status_code >= 400:
            try:
                body = json.loads(response.text)
            except ValueError:
                problems.append(f"{label}: non-JSON error {response.text[:100]!r}")
                return
            if not isinstance(body, dict) or body.get("StatusCode") != response.status_code:
                problems.append(f"{label}: error body without StatusCode: {response.text[:200]}")

    run()
    return sent, len(successes), problems


def _fuzz(base_url: str, api_key: str, token: str, examples: int) -> tuple[int, int, list[str]]:
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    sent = ok = 0
    problems: list[str] = []
    for result in schema.get_all_operations():
        n, good, p = _fuzz_operation(result.ok(), base_url, api_key, token, examples)
        sent += n
        ok += good
        problems += p
    return sent, ok, problems


async def _seeded(srv: ServerHandle) -> None:
    async with srv.client() as http:
        r = await http.post(
            "/api/v2/video/call/default/fuzz",
            json={"data": {"created_by_id": "alice", "members": [{"user_id": "alice"}]}},
        )
        assert r.status_code == 200


async def fuzz_server(srv: ServerHandle, examples: int = EXAMPLES_PER_OPERATION) -> None:
    """Fuzz every operation of ``srv`` (users alice and bob) with a server and a user token."""
    await _seeded(srv)
    for token in (srv.server_token(), srv.user_token("alice")):
        sent, ok, problems = await asyncio.to_thread(
            _fuzz, srv.base_url, srv.api_key, token, examples
        )
        assert sent >= 5 * examples
        assert ok >= 10, f"only {ok} of {sent} fuzzed requests succeeded"  # not all 4xx
        assert problems == [], "\n".join(problems[:10])


async def test_no_server_errors_with_server_and_user_tokens(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice", "bob"]) as srv:
        await fuzz_server(srv)
