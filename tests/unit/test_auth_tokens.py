"""Who the caller is, as the token says: development HS256 tokens and the production path,
RS256 tokens checked against the identity provider's published keys (JWKS), its audience
and its issuer."""

import functools
import json
import os
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import TokenVerifier, make_token
from shared.errors import Unauthorized
from shared.settings import InfraSettings

AUDIENCE, ISSUER = "qms-complaints", "https://login.example.com/"
ROOT = Path(__file__).resolve().parents[2]


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def idp(tmp_path: Path):
    """The identity provider: its signing key, and its JWKS document served over HTTP on
    loopback, where the verifier fetches it."""
    key = rsa_key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield key, f"http://127.0.0.1:{server.server_port}/jwks.json"
    server.shutdown()
    server.server_close()


def signed(key, kid: str = "k1", **claims) -> str:
    body = {"sub": "li.wei", "name": "Li Wei", "roles": ["quality"], "aud": AUDIENCE,
            "iss": ISSUER, "exp": int(time.time()) + 600} | claims
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def verifier(jwks_url: str, **settings) -> TokenVerifier:
    return TokenVerifier(InfraSettings(jwks_url=jwks_url, jwt_audience=AUDIENCE,
                                       jwt_issuer=ISSUER, **settings))


def test_an_identity_providers_token_names_the_caller_and_roles(idp):
    key, url = idp
    who = verifier(url).verify(signed(key))
    assert (who.sub, who.name, who.roles) == ("li.wei", "Li Wei", ["quality"])


@pytest.mark.parametrize("claims, says", [
    ({"aud": "another-app"}, "audience"),
    ({"iss": "https://evil.example.com/"}, "issuer"),
    ({"exp": int(time.time()) - 60}, "expired"),
])
def test_a_token_for_another_app_issuer_or_time_is_refused(idp, claims, says):
    key, url = idp
    with pytest.raises(Unauthorized, match=f"(?i){says}"):
        verifier(url).verify(signed(key, **claims))


def test_a_token_signed_by_another_key_is_refused(idp):
    _, url = idp
    with pytest.raises(Unauthorized):
        verifier(url).verify(signed(rsa_key()))


def test_with_jwks_a_development_token_is_refused_even_with_the_right_secret(idp):
    # Algorithm confusion: an HS256 token must not pass where RS256 is expected.
    _, url = idp
    settings = InfraSettings(jwks_url=url)
    token = make_token(settings.jwt_secret.get_secret_value(), "mallory", ["manager"])
    with pytest.raises(Unauthorized):
        TokenVerifier(settings).verify(token)


def test_empty_settings_from_compose_or_kubernetes_mean_unset():
    settings = InfraSettings(jwks_url="", jwt_audience="", jwt_issuer="")
    assert (settings.jwks_url, settings.jwt_audience, settings.jwt_issuer) == (None, None, None)
    token = make_token(settings.jwt_secret.get_secret_value(), "wang.fang", ["sales"])
    assert TokenVerifier(settings).verify(token).sub == "wang.fang"


# --- how long a token may live (QMS_TOKEN_MAX_LIFETIME_S) ----------------------------------

DAY = 24 * 3600


def test_a_development_token_living_longer_than_the_maximum_is_refused():
    settings = InfraSettings()
    ten_years = make_token(settings.jwt_secret.get_secret_value(), "x", ["sales"],
                           ttl_s=10 * 365 * DAY)
    with pytest.raises(Unauthorized, match="lives too long.*QMS_TOKEN_MAX_LIFETIME_S"):
        TokenVerifier(settings).verify(ten_years)
    a_day = make_token(settings.jwt_secret.get_secret_value(), "x", ["sales"], ttl_s=DAY)
    assert TokenVerifier(settings).verify(a_day).sub == "x"


def test_an_identity_providers_token_living_longer_than_the_maximum_is_refused(idp):
    key, url = idp
    now = int(time.time())
    with pytest.raises(Unauthorized, match="lives too long"):
        verifier(url).verify(signed(key, iat=now - 60, exp=now + 2 * DAY))
    assert verifier(url).verify(signed(key, iat=now - 60, exp=now + 3600)).sub == "li.wei"


def test_a_token_without_iat_is_measured_from_now():
    secret = InfraSettings().jwt_secret.get_secret_value()
    now = int(time.time())
    long = jwt.encode({"sub": "x", "roles": ["sales"], "exp": now + DAY + 600}, secret,
                      algorithm="HS256")
    with pytest.raises(Unauthorized, match="lives too long"):
        TokenVerifier(InfraSettings()).verify(long)
    short = jwt.encode({"sub": "x", "roles": ["sales"], "exp": now + 600}, secret,
                       algorithm="HS256")
    assert TokenVerifier(InfraSettings()).verify(short).sub == "x"


def test_the_maximum_lifetime_is_a_setting():
    settings = InfraSettings(token_max_lifetime_s=3600)
    two_hours = make_token(settings.jwt_secret.get_secret_value(), "x", ["sales"], ttl_s=7200)
    with pytest.raises(Unauthorized, match="at most 1 h"):
        TokenVerifier(settings).verify(two_hours)


# --- `make token` (python -m shared.auth) --------------------------------------------------

def make_token_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("QMS_JWT_SECRET", "QMS_JWKS_URL", "QMS_TOKEN_MAX_LIFETIME_S")}
    return subprocess.run([sys.executable, "-m", "shared.auth", "--role", "quality",
                           "--sub", "li.wei", *args], cwd=ROOT, env=clean | env,
                          capture_output=True, text=True, timeout=60)


def test_make_token_signs_with_the_development_secret():
    done = make_token_cli()
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert TokenVerifier(InfraSettings()).verify(token).sub == "li.wei"


@pytest.mark.parametrize("env", [
    {"QMS_JWT_SECRET": "the-plants-own-secret-0123456789-abcdefgh"},
    {"QMS_JWKS_URL": "https://login.example.com/keys"},
])
def test_make_token_refuses_when_the_development_secret_is_not_the_one_in_use(env):
    done = make_token_cli(**env)
    assert done.returncode != 0 and done.stdout == ""
    assert "refused" in done.stderr and "development secret" in done.stderr


def test_make_token_refuses_a_token_longer_lived_than_the_services_accept():
    done = make_token_cli("--hours", "48")
    assert done.returncode != 0 and done.stdout == ""
    assert "QMS_TOKEN_MAX_LIFETIME_S" in done.stderr
