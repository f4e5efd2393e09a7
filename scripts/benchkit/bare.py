"""The limit intake is compared with: FastAPI + uvicorn, the same JSON body, one PyMongo
async insert into the same FerretDB, nothing else (no auth, validation, events, history).

    python scripts/benchkit/bare.py --port 8099 --database bench_bare
"""

import argparse
import uuid
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo import AsyncMongoClient


def create(mongo_url: str, database: str) -> FastAPI:
    state: dict = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state["client"] = AsyncMongoClient(mongo_url, tz_aware=True)
        state["coll"] = state["client"][database]["feedback"]
        yield
        await state["client"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/feedback", status_code=201)
    async def register(request: Request) -> JSONResponse:
        doc = await request.json() | {"_id": str(uuid.uuid4())}
        await state["coll"].insert_one(doc)
        return JSONResponse({"id": doc["_id"]}, status_code=201)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--mongo-url", default="mongodb://127.0.0.1:27017/")
    args = parser.parse_args()
    # The services' own uvicorn settings (shared/runner.py), so only the app differs.
    uvicorn.run(create(args.mongo_url, args.database), host="127.0.0.1", port=args.port,
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
