"""Whether the open-work summaries can be trusted at a start: the last one out stopped clean.

Reconciling `<name>_open` with its store reads the store (a scan on FerretDB: minutes of CPU
at 100,000 complaints). It is needed only when a save was cut between the store's write and
its summary's: a crash. So the instances of a service keep a small `lifecycle` collection:
- each running instance has a `running/<id>` document, refreshed every `HEARTBEAT_S`;
- the last instance to stop, if it stopped cleanly and no other instance is registered
  (alive, or dead without stopping), leaves a `clean_stop` note;
- a start takes the note away before anything else is written, and skips the
  reconciliation when it found one. A start that reconciles afterwards forgets the
  instances that stopped beating before it began: whatever they left, it has put right.
With several replicas (Kubernetes, on MongoDB) the note is rarely left, and the
reconciliation there is an indexed read anyway.
"""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.collection import AsyncCollection

HEARTBEAT_S = 60.0
ALONE_TTL_S = 5.0  # how long "no other instance is alive" is believed before asking again
CLEAN_STOP = "clean_stop"
RUNNING = "running/"


class Lifecycle:
    def __init__(self, collection: AsyncCollection, heartbeat_s: float = HEARTBEAT_S):
        self.collection = collection
        self.heartbeat_s = heartbeat_s
        self.instance = f"{RUNNING}{uuid.uuid4().hex}"
        self.began_at = _now()
        self._alone_until: tuple[datetime, bool] | None = None  # (asked again after, answer)

    async def begin(self) -> bool:
        """Register this instance; True when the last stop left the summaries as saved."""
        self.began_at = _now()
        note = await self.collection.find_one_and_delete({"_id": CLEAN_STOP})
        await self.beat()
        return note is not None

    async def beat(self) -> None:
        await self.collection.update_one({"_id": self.instance}, {"$set": {"at": _now()}},
                                         upsert=True)

    async def keep_beating(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
            except Exception:  # noqa: BLE001 - a missed beat only makes the note less likely
                pass

    async def forget_dead(self) -> None:
        """After a reconciliation that began at this start: the instances silent since
        before it (three beats missed) died, and what they left has been put right."""
        silent_since = self.began_at - timedelta(seconds=3 * self.heartbeat_s)
        for doc in await self._others():
            if doc.get("at") is None or doc["at"] < silent_since:
                await self.collection.delete_one({"_id": doc["_id"]})

    async def end(self, clean: bool) -> bool:
        """Unregister; leave the note when this stop was clean and no other instance is
        registered. Returns whether the note was left."""
        await self.collection.delete_one({"_id": self.instance})
        if not clean or await self._others():
            return False
        await self.collection.update_one({"_id": CLEAN_STOP}, {"$set": {"at": _now()}},
                                         upsert=True)
        return True

    async def alone(self) -> bool:
        """No other instance of this service is alive (none beat within three heartbeats):
        what only this process writes, it may keep in memory. Asked at most every
        `ALONE_TTL_S`, so a replica that starts is seen within that."""
        now = _now()
        if self._alone_until is None or now >= self._alone_until[0]:
            silent_since = now - timedelta(seconds=3 * self.heartbeat_s)
            others = [d for d in await self._others()
                      if d.get("at") is not None and d["at"] >= silent_since]
            self._alone_until = (now + timedelta(seconds=ALONE_TTL_S), not others)
        return self._alone_until[1]

    async def _others(self) -> list[dict]:
        # The collection holds one document per instance and the note: a read of a handful.
        return [d for d in await self.collection.find({}).to_list(None)
                if str(d["_id"]).startswith(RUNNING) and d["_id"] != self.instance]


def _now() -> datetime:
    return datetime.now(UTC)

