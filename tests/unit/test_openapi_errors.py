"""Issue 12: every status an operation can answer is in its OpenAPI, with the error shape."""

import importlib

import pytest

SERVICES = ("intake", "quality", "capa", "reporting", "notify")


def openapi_of(name: str) -> dict:
    app = importlib.import_module(f"services.{name}.app")
    settings = importlib.import_module(f"services.{name}.settings").Settings()
    return app.create(settings).openapi()


@pytest.mark.parametrize("name", SERVICES)
def test_every_refusal_an_operation_can_give_is_documented_in_the_error_shape(name):
    schema = openapi_of(name)
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            answers = op["responses"]
            where = f"{name} {method.upper()} {path}"
            must = {"500", "503"}
            if op.get("x-roles"):
                must |= {"401", "403"}
            if "{" in path:
                must.add("404")
            if op.get("parameters") or "requestBody" in op:
                must.add("422")
            if method in ("post", "put", "patch", "delete"):
                must |= {"400", "409"}
            assert must <= answers.keys(), f"{where} lacks {sorted(must - answers.keys())}"
            for status, answer in answers.items():
                if int(status) >= 400:
                    assert answer["content"]["application/json"]["schema"] == error, \
                        f"{where} {status} is not documented in the error shape"
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
