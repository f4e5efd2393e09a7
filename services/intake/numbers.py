"""Register number → feedback id, looked up by `_id` (what people say on the phone, and what
a mailed follow-up quotes).

On FerretDB's SQLite handler only an `_id` lookup is cheap (with the project's patch,
deploy/ferretdb); a query on `register_no` reads the whole register, indexed or not. So
each registration also writes `{_id: register_no, id: feedback_id}` here, after the
feedback itself (the unique index on the feedback's `register_no` stays the rule). A miss
falls back to the indexed query, for records from before this collection existed or a
crash between the two writes, and fills the gap so the next lookup is by `_id`.
"""

from pymongo.errors import DuplicateKeyError

from services.intake.domain import Feedback
from shared.store import Repository

REGISTER_NUMBERS = "register_numbers"


async def remember(repo: Repository[Feedback], register_no: str, feedback_id: str) -> None:
    """Idempotent: a number always names the same feedback, so a second write is a no-op."""
    try:
        await repo.collection.database[REGISTER_NUMBERS].insert_one(
            {"_id": register_no, "id": feedback_id})
    except DuplicateKeyError:
        pass  # written before (a retried request, a redelivered mail)


async def feedback_id(repo: Repository[Feedback], register_no: str) -> str | None:
    """The feedback registered under this number, or None."""
    known = await repo.collection.database[REGISTER_NUMBERS].find_one({"_id": register_no})
    if known is not None:
        return str(known["id"])
    # Not (yet) in the lookup: the unique index on MongoDB, a scan on FerretDB. Rare: an
    # unknown number (a typo) or a record older than the lookup, once.
    doc = await repo.collection.find_one({"register_no": register_no}, projection={"_id": 1})
    if doc is None:
        return None
    await remember(repo, register_no, str(doc["_id"]))
    return str(doc["_id"])
