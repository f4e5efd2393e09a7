"""Register number → feedback id, looked up by `_id` (what people say on the phone, and what
a mailed follow-up quotes).

On FerretDB's SQLite handler only an `_id` lookup is cheap (with the project's patch,
deploy/ferretdb); a query on `register_no` reads the whole register, indexed or not. So the
feedback collection keeps the kit's lookup `register_numbers` (`shared.lookups`,
`{_id: register_no, id: feedback_id}`, declared in app.py): `Repository.add_numbered` claims
each number there before the feedback is written, and the start names the records older
than the claims once. A miss is therefore an unknown number: one `_id` read, never a scan.
"""

from services.intake.domain import Feedback
from shared.store import Repository

REGISTER_NUMBERS = "register_numbers"
FIELD = "register_no"


async def feedback_id(repo: Repository[Feedback], register_no: str) -> str | None:
    """The feedback registered under this number, or None."""
    return await repo.id_of(register_no)
