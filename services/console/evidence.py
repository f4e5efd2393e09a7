"""The complaint's photos and documents, fetched from intake with the person's own token.

A page's `<img>` cannot carry the bearer token, so the console serves the bytes itself:
intake decides who may see them (Sales, Quality, managers, auditors, and the people of a unit
responsible for the complaint, P-5.3.2), the console only passes them on.
"""

import re
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from services.console.pages import Console

SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Kept with the page: a photo does not change (its name is its hash), but it is not public.
HEADERS = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
           "Content-Disposition": "inline"}


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/evidence/{feedback_id}/{sha256}")
    async def evidence(request: Request, feedback_id: str, sha256: str) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need()
        if not SHA256.match(sha256):
            return Response(status_code=404)
        resp = await console.backend.raw(
            token, "intake", "GET", f"/feedback/{quote(feedback_id)}/attachments/{sha256}")
        return Response(resp.content, media_type=resp.headers.get("content-type"),
                        headers=HEADERS)

    return r
