"""P-3: every action names the role allowed to take it. Managers and auditors read
everything and change nothing: on every write endpoint of every service they get
403, and the refusal is the only trace (in the audit log)."""

import re

import pytest

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
                      for method in ops if method in WRITES]
            for path, method in writes:
                resp = await reader.request(method.upper(), concrete(path), json={})
                assert resp.status_code == 403, (service, method, path, resp.text)
                assert resp.json()["error"]["code"] == "forbidden"
                checked += 1
            after = ok(await auditor.get("/audit/refusals"))["total"]
            assert after - before == len(writes), f"{service}: every refusal is audited"
    assert checked >= 30  # every service's write endpoints were found and tried
