"""The shared servers taken down and brought back: RabbitMQ's application and FerretDB.

Both are the ones `scripts/infra.sh start` runs; FerretDB is started again by the same script
(`scripts/infra.sh ferretdb`), on its data, so what was written before the kill is there
after it."""

import os
import signal
import subprocess
from pathlib import Path

import aio_pika
import httpx
from pymongo import AsyncMongoClient

from tests.e2e.harness import ROOT

INFRA = ROOT / "scripts" / "infra.sh"
FERRETDB_PID = ROOT / "var" / "run" / "ferretdb.pid"
RABBIT_API = os.environ.get("QMS_RABBIT_API", "http://127.0.0.1:15672/api")


def _run(*args: str | Path, timeout: float = 180, env: dict[str, str] | None = None) -> str:
    # start_new_session: a FerretDB started here must outlive this test's process group
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=timeout, start_new_session=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited with {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout


def _rabbitmqctl_env() -> dict[str, str]:
    """The environment infra.sh gives rabbitmqctl (the node's loopback distribution)."""
    printed = _run(INFRA, "rabbitmq-config", timeout=30).split("# environment:", 1)[-1]
    return os.environ | dict(line.split("=", 1) for line in printed.splitlines() if "=" in line)


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    return _run("rabbitmqctl", "-q", *args, timeout=timeout, env=_rabbitmqctl_env())


def broker_running() -> bool:
    try:
        _run("rabbitmq-diagnostics", "-q", "check_running", timeout=60, env=_rabbitmqctl_env())
    except (RuntimeError, subprocess.TimeoutExpired, OSError):
        return False
    return True


def stop_broker_app() -> None:
    rabbitmqctl("stop_app")


def start_broker_app() -> None:
    rabbitmqctl("start_app", timeout=240)
    rabbitmqctl("await_startup", "--timeout", "120", timeout=180)


def ferretdb_pid() -> int | None:
    """The FerretDB `scripts/infra.sh` started, when it runs (None: another database)."""
    try:
        pid = int(FERRETDB_PID.read_text().strip())
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    return pid if Path(exe).name.startswith("ferretdb") else None


def kill_ferretdb() -> int:
    pid = ferretdb_pid()
    assert pid is not None, "no FerretDB started by scripts/infra.sh is running"
    os.kill(pid, signal.SIGKILL)
    return pid


def start_ferretdb() -> None:
    """As `make up` starts it, on the same data; returns once it listens."""
    _run(INFRA, "ferretdb", timeout=240)


async def queue_depths(namespace: str, amqp_url: str) -> dict[str, int]:
    """Messages ready in each of the namespace's queues (the main, retry and dead-letter
    queues of every service), counted by the broker at this moment."""
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=20) as http:
        resp = await http.get(f"{RABBIT_API}/queues/%2F", params={"columns": "name"})
        resp.raise_for_status()
        names = sorted(q["name"] for q in resp.json() if q["name"].startswith(f"{namespace}."))
    depths: dict[str, int] = {}
    connection = await aio_pika.connect(amqp_url, timeout=20)
    async with connection:
        for name in names:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = queue.declaration_result.message_count or 0
            await channel.close()
    return depths


async def pending_outboxes(mongo_url: str, namespace: str,
                           services: tuple[str, ...]) -> dict[str, int]:
    """Saves whose events are not published yet, per `<service>.<collection>`: the marks in
    each service's `outbox_due` (what the relays themselves sweep) whose document holds
    events naming them (a mark whose save a kill cut off names none, and its relay drops it
    after a grace), and any document still flagged with events from before marks existed."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, serverSelectionTimeoutMS=20_000)
    pending: dict[str, int] = {}
    try:
        for service in services:
            db = client[f"{namespace}_{service}"]
            async for mark in db["outbox_due"].find({"doc_id": {"$exists": True}}):
                doc = await db[mark["collection"]].find_one({"_id": mark["doc_id"]},
                                                            {"outbox": 1})
                if doc is None or all(e.get("outbox_mark") != mark["_id"]
                                      for e in doc.get("outbox") or []):
                    continue
                key = f"{service}.{mark['collection']}"
                pending[key] = pending.get(key, 0) + 1
            for name in await db.list_collection_names():
                if n := await db[name].count_documents({"outbox_pending": True}):
                    pending[f"{service}.{name} (unmarked)"] = n
    finally:
        await client.close()
    return pending
