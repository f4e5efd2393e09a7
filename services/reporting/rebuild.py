"""`python -m services.reporting.rebuild`: rebuild every read model from the event history.

The reporting service keeps every event it has seen (`event_history`,
append-only). This command folds that history again into fresh collections
(register and its days, CAPAs, recurrences, monthly counters, customer names)
and swaps them in; the statistics table it gives is the same as the one built live.

Run it while the reporting service is stopped: FerretDB does not make one
document's update atomic across processes (README, "Why a per-document write
lock"), so two writers would race. It refuses when the service answers on its
port (use `--force` if you know better). On a running service, ask it instead:
`POST /admin/rebuild` (role ops), which pauses event handling while it rebuilds.

Settings as for the service: `QMS_NAMESPACE`, `QMS_MONGO_URL` (or `QMS_REPORTING_MONGO_URL`),
`QMS_REPORTING_TIMEZONE`, `QMS_REPORTING_HTTP_HOST/PORT`.
"""

import argparse
import asyncio
import json
import sys
from zoneinfo import ZoneInfo

import httpx

from services.reporting.readmodels import ReadModels, RebuildReport
from services.reporting.settings import Settings
from shared.store import WriteLocks, database, mongo_client


async def service_answers(settings: Settings) -> bool:
    url = f"http://{settings.http_host}:{settings.http_port}/healthz"
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def rebuild(settings: Settings) -> RebuildReport:
    client = mongo_client(settings.database_url)
    try:
        db = database(client, settings.infra.namespace, "reporting")
        models = ReadModels(db, WriteLocks(), ZoneInfo(settings.timezone))
        return await models.rebuild()
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.reporting.rebuild",
        description="Rebuild the reporting read models from the stored event history "
                    "(with the reporting service stopped).")
    parser.add_argument("--force", action="store_true",
                        help="run even though the reporting service answers on its port")
    args = parser.parse_args(argv)
    settings = Settings()
    if not args.force and asyncio.run(service_answers(settings)):
        print(f"The reporting service answers on {settings.http_host}:{settings.http_port}. "
              "Stop it first, or ask it to rebuild itself: POST /admin/rebuild (role ops).",
              file=sys.stderr)
        return 2
    report = asyncio.run(rebuild(settings))
    print(json.dumps({"namespace": settings.infra.namespace, **report.__dict__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
