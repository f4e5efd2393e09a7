"""The whole system as real processes (`python -m services.<name>`) on the real servers.

Each `System` gets its own namespace (exchange, queues, databases) and free
ports, so systems with different settings can run side by side.
"""

import asyncio
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from faststream.rabbit import RabbitQueue

from shared.auth import make_token
from shared.events import Actor, Contract, Envelope, make_event, parse_event
from shared.messaging import EventPublisher, Topology, new_broker
from shared.settings import InfraSettings
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "reports" / "e2e-logs"
SERVICES = ("intake", "quality", "capa", "reporting", "notify")


@functools.cache
def service_broker_urls() -> dict[str, str]:
    """Each service's own least-privilege broker user, as `make up` uses them."""
    out = subprocess.run([str(ROOT / "scripts" / "rabbitmq_users.sh"), "--print-env"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


_GIVEN: set[int] = set()  # ports this test process handed out


def free_port() -> int:
    """A port free now and never handed out before in this process: the OS may give the
    same free port to two calls in a row (a CI run had notify and reporting on one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


class System:
    def __init__(self, namespace: str, env: dict[str, str] | None = None,
                 services: tuple[str, ...] = SERVICES):
        self.namespace = namespace
        self.services = services
        self.ports = {name: free_port() for name in services}
        self.env = {
            "QMS_NAMESPACE": namespace,
            "QMS_RETRY_DELAY_MS": "300",
            "QMS_MAX_ATTEMPTS": "3",
            "QMS_RELAY_INTERVAL_S": "0.3",
            "QMS_INTAKE_ATTACHMENT_DIR": str(ROOT / "var" / "test-attachments" / namespace),
            "QMS_NOTIFY_ATTACHMENT_DIR": str(ROOT / "var" / "test-attachments" / namespace),
            "QMS_REPORTING_ATTACHMENT_DIR": str(ROOT / "var" / "test-attachments" / namespace),
            "QMS_NOTIFY_INBOUND_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
        } | service_broker_urls() | (env or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.secret = InfraSettings().jwt_secret.get_secret_value()

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    async def start(self, deadline_s: float = 60) -> "System":
        LOGS.mkdir(parents=True, exist_ok=True)
        for name in self.services:
            self._spawn(name)
        for name in self.services:
            await self.wait_ready(name, deadline_s)
        return self

    def _spawn(self, name: str) -> None:
        env = os.environ | self.env | {f"QMS_{name.upper()}_HTTP_PORT": str(self.ports[name])}
        log = open(LOGS / f"{self.namespace}-{name}.log", "ab")  # noqa: SIM115 - lives with proc
        self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT,
                                            env=env, stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, name: str, deadline_s: float = 60) -> None:
        deadline = time.monotonic() + deadline_s
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {self.procs[name].returncode}; see "
                                       f"{LOGS / f'{self.namespace}-{name}.log'}")
                try:
                    resp = await http.get(f"{self.url(name)}/readyz")
                    # Ready, and the service asked for: not another process on its port.
                    if resp.status_code == 200 and resp.json().get("service") == name:
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {deadline_s}s")

    async def restart(self, name: str, *, kill: bool = False) -> None:
        """Stop one service (SIGKILL when `kill`, else graceful) and start it again."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        self._spawn(name)
        await self.wait_ready(name)

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, 25)
            except subprocess.TimeoutExpired:
                proc.kill()

    async def publish(self, payload: Contract, *, correlation_id: str,
                      actor: Actor | None = None, producer: str = "test") -> Envelope:
        """Publish an event on this system's exchange as if an upstream service had."""
        event = make_event(payload, producer=producer, correlation_id=correlation_id,
                           actor=actor or Actor(sub="tester", roles=("sales",)))
        await self.publish_envelope(event)
        return event

    async def publish_envelope(self, event: Envelope) -> None:
        broker = new_broker(InfraSettings().amqp_url.get_secret_value())
        await broker.connect()
        try:
            await EventPublisher(broker, Topology(self.namespace, "test").exchange).publish(event)
        finally:
            await broker.stop()

    def token(self, role: str | list[str], sub: str = "tester", unit: str | None = None,
              name: str | None = None) -> str:
        roles = [role] if isinstance(role, str) else role
        return make_token(self.secret, sub, roles, name=name, unit=unit)

    def client(self, service: str, role: str | list[str] | None, sub: str = "tester",
               unit: str | None = None, **kw: Any) -> httpx.AsyncClient:
        """An HTTP client for one service, signed in with `role` (None: no token)."""
        headers = {} if role is None else {
            "Authorization": f"Bearer {self.token(role, sub, unit)}"}
        return httpx.AsyncClient(base_url=self.url(service), headers=headers, timeout=20, **kw)


class Actors:
    """The people of the procedure, each an HTTP client on the service they use."""

    def __init__(self, system: System):
        self.system = system
        self.sales = system.client("intake", "sales", sub="wang.fang")
        self.quality = system.client("quality", "quality", sub="li.wei")
        self.capa_quality = system.client("capa", "quality", sub="li.wei")
        self.manager_intake = system.client("intake", "manager", sub="chen.jie")
        self.auditor_intake = system.client("intake", "auditor", sub="zhou.yu")

    async def aclose(self) -> None:
        for client in (self.sales, self.quality, self.capa_quality, self.manager_intake,
                       self.auditor_intake):
            await client.aclose()

    def unit(self, unit: str, sub: str | None = None) -> httpx.AsyncClient:
        return self.system.client("capa", "unit", sub=sub or f"{unit}.lead", unit=unit)

    def as_role(self, service: str, role: str, **kw: Any) -> httpx.AsyncClient:
        return self.system.client(service, role, **kw)


class EventTap:
    """A test's own queue on the system's exchange: what a subscribing plant system sees.

    Redeliveries (the same event id again) are kept once, as a consumer would."""

    def __init__(self, system: System, *routing_keys: str):
        self.system = system
        self.keys = routing_keys or ("#",)
        self.seen: list[Envelope] = []

    async def __aenter__(self) -> "EventTap":
        self.broker = new_broker(InfraSettings().amqp_url.get_secret_value())
        await self.broker.connect()
        exchange = await self.broker.declare_exchange(Topology(self.system.namespace,
                                                               "test").exchange)
        self.queue = await self.broker.declare_queue(RabbitQueue(
            f"{self.system.namespace}.tap-{uuid.uuid4().hex[:8]}", durable=False,
            exclusive=True, auto_delete=True))
        for key in self.keys:
            await self.queue.bind(exchange, routing_key=key)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.stop()

    async def drain(self) -> list[Envelope]:
        while (msg := await self.queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            env, _ = parse_event(msg.body)
            if env.id not in {e.id for e in self.seen}:
                self.seen.append(env)
        return self.seen

    def of(self, event_type: str, feedback_id: str | None = None) -> list[Envelope]:
        return [e for e in self.seen if e.type == event_type
                and (feedback_id is None or e.correlation_id == feedback_id)]

    async def wait_for(self, event_type: str, feedback_id: str | None = None,
                       where: Callable[[dict], bool] = lambda p: True,
                       timeout: float = 20) -> Envelope:
        """The first `event_type` (of that feedback) whose payload satisfies `where`."""
        async def arrived() -> Envelope | None:
            await self.drain()
            return next((e for e in self.of(event_type, feedback_id) if where(e.payload)), None)
        return await eventually(arrived, timeout=timeout, what=f"event {event_type}")

    async def wait(self, event_type: str, count: int = 1, **payload: Any) -> list[Envelope]:
        """At least `count` events of the type whose payload has these field values."""
        async def arrived() -> list[Envelope] | None:
            await self.drain()
            found = [e for e in self.of(event_type)
                     if all(e.payload.get(k) == v for k, v in payload.items())]
            return found if len(found) >= count else None
        return await eventually(arrived, what=f"{count} x {event_type} {payload}")
