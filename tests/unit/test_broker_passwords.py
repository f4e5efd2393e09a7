"""The local broker's service users (`make up`, `make test`, `make bench`) get passwords
generated for this installation into the git-ignored var/secrets/broker.env, never the
development values written in the repository (.env.example, which docker compose documents).
tests/integration/test_least_privilege.py shows the broker holds them."""

import base64
import re
import stat
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support import load_script

ROOT = Path(__file__).resolve().parents[2]


def load_users_module():
    return load_script("deploy/rabbitmq/users.py", "qms_rabbitmq_users_unit")


users = load_users_module()


@pytest.fixture
def secrets_file(tmp_path, monkeypatch) -> Path:
    """A fresh installation's var/secrets/broker.env (not yet there), and no overrides."""
    path = tmp_path / "var" / "secrets" / "broker.env"
    monkeypatch.setattr(users, "SECRETS", path)
    for user in users.load()["users"]:
        monkeypatch.delenv(users.password_variable(user["name"]), raising=False)
    return path


def test_the_local_broker_users_get_passwords_generated_for_this_installation(secrets_file):
    subset = users.local_subset(users.load())
    generated = users.read_env_file(secrets_file)
    documented = users.read_env_file(ROOT / ".env.example")
    assert sorted(generated) == sorted(users.password_variable(u["name"])
                                       for u in subset["users"])
    assert "RABBITMQ_QMS_INTAKE_PASSWORD" in generated
    for variable, password in generated.items():
        assert password != documented.get(variable)
        assert len(password) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", password)  # URL-safe
    assert len(set(generated.values())) == len(generated)
    for user in subset["users"]:  # the broker gets exactly these
        salt = base64.b64decode(user["password_hash"])[:4]
        password = generated[users.password_variable(user["name"])]
        assert users.rabbit_hash(password, salt) == user["password_hash"]
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_file.parent.stat().st_mode) == 0o700


def test_generated_passwords_stay_the_same_on_every_later_run(secrets_file):
    users.local_subset(users.load())
    first = users.read_env_file(secrets_file)
    users.local_subset(users.load())
    assert users.read_env_file(secrets_file) == first
    urls = users.amqp_urls("127.0.0.1", 5672)
    assert urls["QMS_INTAKE_AMQP_URL"] == (
        f"amqp://qms-intake:{quote(first['RABBITMQ_QMS_INTAKE_PASSWORD'], safe='')}"
        f"@127.0.0.1:5672/")


def test_an_environment_variable_overrides_a_generated_password(secrets_file, monkeypatch):
    users.local_subset(users.load())
    monkeypatch.setenv("RABBITMQ_QMS_INTAKE_PASSWORD", "the-plants-own-0123456789")
    assert users.password_of("qms-intake", local=True) == "the-plants-own-0123456789"
    assert "the-plants-own-0123456789" in users.amqp_urls("127.0.0.1", 5672)[
        "QMS_INTAKE_AMQP_URL"]


def test_before_any_are_generated_the_local_urls_say_to_run_make_up(secrets_file):
    with pytest.raises(SystemExit, match="make up"):
        users.amqp_urls("127.0.0.1", 5672)
    assert not secrets_file.exists()  # reading never generates: only the broker's setup does
