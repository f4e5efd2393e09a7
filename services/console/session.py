"""The session cookie and CSRF protection.

The session is a cookie signed with itsdangerous (HttpOnly, SameSite=Lax, Secure unless the
console is reached on loopback): the CSRF token of this browser, and after a development
sign-in the person's development token. Behind an auth proxy the token is not kept: the
proxy forwards it on every request (`X-Forwarded-Access-Token` or `Authorization`).
"""

import hmac
import secrets
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "qms_console"
LANG_COOKIE = "qms_lang"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
CSRF_FIELD = "csrf"


class Sessions:
    def __init__(self, secret: str, max_age_s: int):
        self._signer = URLSafeTimedSerializer(secret, salt="qms-console-session")
        self.max_age_s = max_age_s

    def load(self, request: Request) -> dict[str, Any]:
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data = self._signer.loads(raw, max_age=self.max_age_s)
                if isinstance(data, dict) and isinstance(data.get(CSRF_FIELD), str):
                    return data
            except BadSignature:
                pass
        return {CSRF_FIELD: secrets.token_urlsafe(32), "new": True}

    def save(self, request: Request, response: Response, session: dict[str, Any]) -> None:
        data = {k: v for k, v in session.items() if k != "new"}
        response.set_cookie(COOKIE, self._signer.dumps(data), max_age=self.max_age_s,
                            httponly=True, samesite="lax", secure=secure(request), path="/")


def secure(request: Request) -> bool:
    """Cookies go over HTTPS only, unless the console is reached on this machine."""
    return (request.url.hostname or "") not in LOOPBACK


def csrf_ok(session: dict[str, Any], sent: object) -> bool:
    return (not session.get("new") and isinstance(sent, str)
            and hmac.compare_digest(sent.encode(), str(session[CSRF_FIELD]).encode()))


def set_language(request: Request, response: Response, lang: str) -> None:
    response.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, httponly=True,
                        samesite="lax", secure=secure(request), path="/")


def forwarded_token(request: Request) -> str | None:
    """The access token an auth proxy forwards (oauth2-proxy: X-Forwarded-Access-Token)."""
    token = request.headers.get("x-forwarded-access-token")
    if token:
        return token.strip()
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials else None
