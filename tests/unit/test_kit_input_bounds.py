"""Bad input is a 422 that says what is wrong and where, never a 500 (issue 12).

Pages, quantities, dates and months are bounded, dates are ISO 8601 text (pydantic would
read `0.5` as a Unix timestamp), months have ASCII digits, and the OpenAPI document states
the ranges. The five services' apps answer here without being started: bad input is
refused before anything reaches the database (tests/integration/test_input_bounds.py
sends the same on the running services).
"""

import importlib
from datetime import UTC, date, datetime

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from shared.api import PAGE_MAX
from shared.auth import ROLES, make_token
from shared.contracts import Disposition, FeedbackRegistered
from shared.vocabulary import (
    ISO_DATE,
    ISO_MONTH,
    QUANTITY_MAX,
    AwareIsoDateTime,
    IsoDate,
    IsoDateTime,
    IsoMonth,
    KeptIsoDate,
    ReturnedSample,
)

SERVICES = ("intake", "quality", "capa", "reporting", "notify")


def app_of(name: str, tmp_path):
    settings_cls = importlib.import_module(f"services.{name}.settings").Settings
    extra = {"attachment_dir": tmp_path / "attachments"} if name == "intake" else {}
    return importlib.import_module(f"services.{name}.app").create(settings_cls(**extra))


def client(app) -> httpx.AsyncClient:
    """As someone holding every role, so only the input decides the answer."""
    secret = app.state.service.settings.infra.jwt_secret.get_secret_value()
    token = make_token(secret, "tester", list(ROLES), unit="production")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://svc",
                             headers={"Authorization": f"Bearer {token}"})


def invalid_at(resp: httpx.Response, loc: str) -> str:
    """The message of a 422 whose details name `loc`."""
    assert resp.status_code == 422, f"{resp.request.url}: {resp.status_code} {resp.text}"
    error = resp.json()["error"]
    assert error["code"] == "invalid" and loc in {d["loc"] for d in error["details"]}, error
    return error["message"]


def fill(path: str) -> str:
    return path.replace("{subscription_id}", "does-not-exist")


async def test_every_list_endpoint_refuses_a_page_beyond_the_bound_with_422(tmp_path):
    lists = 0
    for name in SERVICES:
        app = app_of(name, tmp_path)
        spec = app.openapi()
        async with client(app) as http:
            for path, ops in spec["paths"].items():
                params = {p["name"]: p for p in ops.get("get", {}).get("parameters", [])}
                if "page" not in params:
                    continue
                assert params["page"]["schema"]["maximum"] == PAGE_MAX, (name, path)
                for page in (10**18, 10**30, PAGE_MAX + 1):
                    message = invalid_at(await http.get(fill(path), params={"page": page}),
                                         "query.page")
                    assert f"less than or equal to {PAGE_MAX}" in message, (name, path)
                lists += 1
    assert lists >= 15  # every service's lists and audit logs were found


@pytest.mark.parametrize("text", [
    "0", "0.5", "1700000000", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59",
    "1900-01-01T00:00:00Z", "1999-12-31", "2100-01-01T00:00:00Z", "２０２６-11-20T09:30:00Z",
    "2026-11-20T09:30:00Z\n", "",
])
def test_dates_and_times_sent_are_iso_8601_text_from_2000_to_2099(text):
    with pytest.raises(ValidationError, match="ISO 8601 with a year from 2000 to 2099"):
        TypeAdapter(IsoDateTime).validate_python(text)


@pytest.mark.parametrize("number", [0, 0.5, 1_700_000_000])
def test_a_number_is_never_read_as_a_unix_timestamp(number):
    for kind in (IsoDateTime, AwareIsoDateTime, IsoDate, KeptIsoDate):
        with pytest.raises(ValidationError, match="ISO 8601"):
            TypeAdapter(kind).validate_python(number)
        with pytest.raises(ValidationError, match="ISO 8601"):
            TypeAdapter(kind).validate_json(str(number))


def test_the_iso_8601_forms_people_send_still_read():
    read = TypeAdapter(IsoDateTime).validate_python
    assert read("2026-11-20T09:30:00+08:00") == datetime(2026, 11, 20, 1, 30, tzinfo=UTC)
    assert read("2026-11-20T09:30:00.123Z").microsecond == 123000
    assert read("2026-11-20 09:30") == datetime(2026, 11, 20, 9, 30)  # no offset: UTC later
    assert read("2026-11-20") == datetime(2026, 11, 20)
    assert read("2000-01-01T00:00:00Z").year == 2000 and read("2099-12-31T23:59:59Z").year == 2099
    assert TypeAdapter(IsoDate).validate_python("2026-11-20") == date(2026, 11, 20)
    # Set by code (a mail's arrival, a test's clock): already a datetime, taken as it is.
    assert read(datetime(2026, 11, 20, tzinfo=UTC)) == datetime(2026, 11, 20, tzinfo=UTC)


def test_dates_kept_in_records_read_back_whatever_their_year():
    # A returned sample's day is stored and read back with its record and events: what was
    # stored before the bounds (any year) must still load.
    assert TypeAdapter(KeptIsoDate).validate_python("1990-05-01") == date(1990, 5, 1)
    with pytest.raises(ValidationError, match="ISO 8601"):
        ReturnedSample.model_validate({"quantity": 1, "received_on": 0, "location": "B3"})


@pytest.mark.parametrize("month", ["２０２６-01", "0000-01", "9999-12", "1999-12", "2026-13",
                                   "2026-1", "2026-01-01"])
def test_months_are_ascii_digits_from_2000_01_to_2099_12(month):
    with pytest.raises(ValidationError, match="a month YYYY-MM from 2000-01 to 2099-12"):
        TypeAdapter(IsoMonth).validate_python(month)
    assert [TypeAdapter(IsoMonth).validate_python(m) for m in ("2000-01", "2099-12")] \
        == ["2000-01", "2099-12"]


def test_quantities_beyond_a_billion_are_refused_by_the_contracts():
    too_many = 10**20  # overflowed BSON's 64-bit integers: a 500 when stored
    with pytest.raises(ValidationError, match="less than or equal to 1000000000"):
        ReturnedSample(quantity=too_many, received_on=date(2026, 11, 20), location="B3")
    with pytest.raises(ValidationError, match="less than or equal to 1000000000"):
        Disposition.model_validate({"type": "scrap", "quantity": too_many})
    facts = {"feedback_id": "f-1", "register_no": "CF-2026-000001", "channel": "phone",
             "customer": {"id": "C-1", "name": "Bright Motors"}, "category": "delivery",
             "received_at": "2026-11-20T09:30:00Z", "severity": "normal", "description": "x",
             "is_complaint": True}
    assert FeedbackRegistered.model_validate(facts | {"quantity_affected": 40})
    with pytest.raises(ValidationError, match="quantity_affected"):
        FeedbackRegistered.model_validate(facts | {"quantity_affected": too_many})
    assert Disposition.model_validate({"type": "scrap", "quantity": QUANTITY_MAX}).quantity \
        == QUANTITY_MAX


def test_the_openapi_documents_the_ranges(tmp_path):
    intake = app_of("intake", tmp_path).openapi()
    schemas = intake["components"]["schemas"]
    new = schemas["NewFeedback"]["properties"]
    assert new["quantity_affected"]["anyOf"][0]["maximum"] == QUANTITY_MAX
    assert new["received_at"]["anyOf"][0]["pattern"].startswith("^20[0-9]{2}-")
    assert schemas["ReturnedSample"]["properties"]["quantity"]["maximum"] == QUANTITY_MAX
    params = {p["name"]: p for p in intake["paths"]["/feedback"]["get"]["parameters"]}
    assert params["received_to"]["schema"]["anyOf"][0]["pattern"].startswith("^20[0-9]{2}-")
    assert "2000 to 2099" in params["received_from"]["description"]
    reporting = app_of("reporting", tmp_path).openapi()
    params = {p["name"]: p for p in reporting["paths"]["/statistics/monthly"]["get"]["parameters"]}
    assert params["month"]["schema"]["anyOf"][0]["pattern"] == ISO_MONTH
    params = {p["name"]: p for p in reporting["paths"]["/register"]["get"]["parameters"]}
    assert params["received_from"]["schema"]["anyOf"][0]["pattern"] == ISO_DATE
    capa = app_of("capa", tmp_path).openapi()
    params = {p["name"]: p for p in capa["paths"]["/actions"]["get"]["parameters"]}
    assert params["from"]["schema"]["anyOf"][0]["pattern"].startswith("^20[0-9]{2}-")
