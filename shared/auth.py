"""Bearer JWT on every route but health and metrics.

Development: HS256 with `QMS_JWT_SECRET`. Production: RS256 verified against
the identity provider's keys at `QMS_JWKS_URL`, with `QMS_JWT_AUDIENCE` and
`QMS_JWT_ISSUER` checked when set. Claims: sub, name, roles, unit, exp, iat. No token may
live longer than `QMS_TOKEN_MAX_LIFETIME_S` (24 h), whoever signed it.
"""

import argparse
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

import jwt
from fastapi import APIRouter, Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError

from shared.errors import Forbidden, Unauthorized
from shared.events import Actor
from shared.settings import DEV_JWT_SECRET, InfraSettings

ROLES = ("sales", "quality", "unit", "manager", "ops", "auditor")
READERS = ("manager", "auditor")  # read everything, change nothing

# The roles each `require(...)` dependency admits, so the API can say them (P-3).
_ALLOWED: dict[Callable[..., Awaitable["Principal"]], tuple[str, ...]] = {}


class Principal(BaseModel):
    """The caller, as the token says."""

    sub: str = Field(..., min_length=1)
    name: str | None = None
    roles: list[str] = Field(default_factory=list)
    unit: str | None = None

    def has_any(self, roles: tuple[str, ...]) -> bool:
        return any(r in self.roles for r in roles)

    def as_actor(self) -> Actor:
        return Actor(sub=self.sub, name=self.name, roles=tuple(self.roles), unit=self.unit)


class TokenVerifier:
    def __init__(self, settings: InfraSettings):
        self._secret = settings.jwt_secret.get_secret_value()
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None
        self._max_lifetime_s = settings.token_max_lifetime_s

    def verify(self, token: str) -> Principal:
        try:
            if self._jwks:
                key = self._jwks.get_signing_key_from_jwt(token).key
                claims = jwt.decode(token, key, algorithms=["RS256"], audience=self._audience,
                                    issuer=self._issuer, options={"require": ["exp", "sub"]})
            else:
                claims = jwt.decode(token, self._secret, algorithms=["HS256"],
                                    audience=self._audience, issuer=self._issuer,
                                    options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The token has expired; sign in again.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The bearer token is not valid: {exc}") from exc
        self._check_lifetime(claims)
        try:
            principal = Principal.model_validate(claims)
        except ValidationError as exc:
            raise Unauthorized("The token's claims are incomplete (sub, roles).") from exc
        if "unit" in principal.roles and not principal.unit:
            raise Unauthorized("A token with role 'unit' must name its responsible unit.")
        return principal

    def _check_lifetime(self, claims: dict) -> None:
        """A stolen token is worth as long as it lives: none may live longer than the maximum,
        counted from its `iat` (issued at), or from now when it carries none."""
        exp, iat = claims["exp"], claims.get("iat")
        start = iat if isinstance(iat, int | float) and not isinstance(iat, bool) else time.time()
        if not isinstance(exp, int | float) or exp - start > self._max_lifetime_s:
            hours = self._max_lifetime_s / 3600
            raise Unauthorized(f"The token lives too long: at most {hours:g} h "
                               f"(QMS_TOKEN_MAX_LIFETIME_S={self._max_lifetime_s}) from its "
                               f"issue; ask for a shorter-lived one.")


_bearer = HTTPBearer(auto_error=False)


async def current_principal(  # async: a sync dependency costs a worker-thread hop per request
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Missing bearer token: send 'Authorization: Bearer <JWT>'.")
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = verifier.verify(credentials.credentials)
    request.state.principal = principal
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller must hold one of `roles`, else 403 (and nothing changes)."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has_any(roles):
            raise Forbidden(
                f"This action needs role {' or '.join(repr(r) for r in roles)}; "
                f"you have {principal.roles or 'none'}."
            )
        return principal

    _ALLOWED[check] = roles
    return check


def allowed_roles(dependant: Dependant) -> tuple[str, ...] | None:
    """The roles a route's `require(...)` admits; None for a route open to everyone."""
    for dep in dependant.dependencies:
        if dep.call is not None and dep.call in _ALLOWED:
            return _ALLOWED[dep.call]
        if (found := allowed_roles(dep)) is not None:
            return found
    return None


def document_roles(router: APIRouter) -> None:
    """P-3: every operation names the roles allowed to take it, in its description and as
    `x-roles` in the OpenAPI document (clients and tests read it from there). Called on a
    router before the app includes it."""
    for route in router.routes:
        if isinstance(route, APIRoute) and (roles := allowed_roles(route.dependant)):
            route.openapi_extra = (route.openapi_extra or {}) | {"x-roles": list(roles)}
            route.description = (f"{route.description}\n\n" if route.description else "") \
                + f"**Roles:** {', '.join(f'`{r}`' for r in roles)}"


def make_token(secret: str, sub: str, roles: list[str], name: str | None = None,
               unit: str | None = None, ttl_s: int = 12 * 3600) -> str:
    """A development token (HS256)."""
    now = int(time.time())
    claims = {"sub": sub, "name": name or sub, "roles": roles, "iat": now, "exp": now + ttl_s}
    if unit:
        claims["unit"] = unit
    return jwt.encode(claims, secret, algorithm="HS256")


def main() -> None:
    parser = argparse.ArgumentParser(description="Print a development JWT (HS256).")
    parser.add_argument("--role", required=True, help=f"comma-separated, of {', '.join(ROLES)}")
    parser.add_argument("--sub", default="dev.user")
    parser.add_argument("--name")
    parser.add_argument("--unit")
    parser.add_argument("--hours", type=int, default=12)
    args = parser.parse_args()
    roles = [r.strip() for r in args.role.split(",") if r.strip()]
    bad = [r for r in roles if r not in ROLES]
    if bad:
        parser.error(f"unknown role(s) {bad}; use {', '.join(ROLES)}")
    if "unit" in roles and not args.unit:
        parser.error("role 'unit' needs UNIT=<responsible unit>, e.g. UNIT=production")
    settings = InfraSettings()
    secret = settings.jwt_secret.get_secret_value()
    if settings.jwks_url or secret != DEV_JWT_SECRET:
        # Only development tokens: the secret (or identity provider) in use here is a real
        # one, and tokens for it come from its owner, not from a make target.
        parser.exit(2, "make token: refused: it signs with the development secret only, and "
                       "the one in use is not it (QMS_JWT_SECRET is set to your own, or "
                       "QMS_JWKS_URL is set); get a token from your identity provider.\n")
    if args.hours * 3600 > settings.token_max_lifetime_s:
        parser.error(f"--hours {args.hours} is longer than the tokens the services accept "
                     f"(QMS_TOKEN_MAX_LIFETIME_S={settings.token_max_lifetime_s})")
    print(make_token(secret, args.sub, roles, args.name, args.unit, args.hours * 3600))


if __name__ == "__main__":
    main()
