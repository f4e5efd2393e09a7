"""P-3: every action names the role allowed to take it. Managers and auditors read
everything and change nothing: on every write endpoint of every service they get
403, and the refusal is the only trace (in the audit log). Every operation says its
roles in the OpenAPI document, and every other role is refused."""

import re

import pytest

from shared.auth import ROLES
from tests.e2e.harness import SERVICES
from tests.support import ok

WRITES = {"post", "put", "patch", "delete"}


def concrete(path: str) -> str:
    """A path whose parameters satisfy their patterns but name nothing that exists."""
    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name == "sha256":
            return "0" * 64
        if name in ("kind",):
            return "corrective"
        if name in ("no",):
            return "1"
        if name == "email":
            return "nobody@plant.example"
        return "CF-2099-999999" if name == "ref" else "does-not-exist"
    return re.sub(r"\{([^}]+)\}", fill, path)


@pytest.mark.parametrize("role", ["auditor", "manager"])
async def test_p_3_readers_change_nothing_on_any_write_endpoint(system, role):
    checked = 0
    for service in SERVICES:
        async with system.client(service, role, sub=f"{role}.reader") as reader, \
                system.client(service, "auditor", sub="audit.check") as auditor:
            spec = ok(await reader.get("/openapi.json"))
            before = ok(await auditor.get("/audit/refusals"))["total"]
            writes = [(path, method) for path, ops in spec["paths"].items()
                      for method, op in ops.items()
                      if method in WRITES and not op.get("x-read-only")]  # e.g. a verification
            for path, method in writes:
                resp = await reader.request(method.upper(), concrete(path), json={})
                assert resp.status_code == 403, (service, method, path, resp.text)
                assert resp.json()["error"]["code"] == "forbidden"
                checked += 1
            after = ok(await auditor.get("/audit/refusals"))["total"]
            assert after - before == len(writes), f"{service}: every refusal is audited"
    assert checked >= 30  # every service's write endpoints were found and tried


async def test_p_3_every_operation_names_its_roles_and_refuses_every_other(system):
    checked = 0
    for service in SERVICES:
        async with system.client(service, "auditor", sub="audit.check") as auditor:
            spec = ok(await auditor.get("/openapi.json"))
            before = ok(await auditor.get("/audit/refusals"))["total"]
        operations = [(path, method, op.get("x-roles")) for path, ops in spec["paths"].items()
                      for method, op in ops.items()]
        unguarded = {path for path, _, roles in operations if roles is None}
        assert unguarded == {"/healthz", "/readyz", "/metrics", "/asyncapi.json"}, service
        refused_here = 0
        for role in ROLES:
            async with system.client(service, role, sub=f"{role}.someone",
                                     unit="production" if role == "unit" else None) as client:
                for path, method, roles in operations:
                    if roles is None or role in roles:
                        continue
                    resp = await client.request(method.upper(), concrete(path), json={})
                    assert resp.status_code == 403, (service, role, method, path, resp.text)
                    assert "needs role" in resp.json()["error"]["message"]
                    refused_here += 1
        async with system.client(service, "auditor", sub="audit.check") as auditor:
            after = ok(await auditor.get("/audit/refusals"))["total"]
        assert after - before == refused_here, f"{service}: every refusal is audited"
        checked += refused_here
    assert checked >= 150  # every service, every role it does not admit
