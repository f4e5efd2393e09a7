"""The Customer Feedback Register (客户意见登记表, P-5.4.1) to print: reporting's PDF of the
paper form (A4 landscape) for a month, in the person's language, through the console because
a link cannot carry the bearer token. reporting decides who may read it (Sales, Quality,
managers, auditors) and refuses a month too large for one PDF with a 422 saying so."""

from fastapi import APIRouter, Request, Response

from services.console.manager import this_month
from services.console.pages import Console

READERS = ("sales", "quality", "manager", "auditor")


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/register.pdf")
    async def register_pdf(request: Request) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        month = request.query_params.get("month") or this_month(ctx)
        resp = await console.backend.raw(
            token, "reporting", "GET", "/register",
            params={"month": month, "format": "pdf", "lang": ctx.tr.lang})
        headers = {k: v for k, v in resp.headers.items()
                   if k.lower() in ("content-type", "content-disposition")}
        return Response(resp.content, headers=headers | {"Cache-Control": "no-store"})

    return r
