"""CAPAs whose owner unit Quality has still to confirm (issue 10: a CAPA a recurrence opened
is owned by default by the unit responsible for most of its complaints, and shows on
Quality's board until Quality confirms it).

Apart from the CAPA pages so that the board (`pages.py`) can use it without a cycle.
"""

import asyncio
from typing import Any

from services.console.backend import Backend

CAPA_OPEN = ("open", "planned", "implemented", "effective")


async def owners_to_confirm(backend: Backend, token: str) -> list[dict[str, Any]]:
    """Each read from capa's open work (bounded by open work), status by status."""
    pages = await asyncio.gather(*(
        backend.get(token, "capa", "/capas", status=status, owner_confirmed="false",
                    page_size=100) for status in CAPA_OPEN))
    return [capa for page in pages for capa in page["items"]]
