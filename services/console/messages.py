"""The console's message ids, as found in its code and templates (for the catalogue's tests
and for whoever adds a language: every id here needs a translation in messages.po)."""

import ast
import re
from pathlib import Path

from services.console.i18n import ERRORS, LABELS

HERE = Path(__file__).resolve().parent
TEMPLATE_CALL = re.compile(r"""\b_\(\s*(?:"([^"]+)"|'([^']+)')""")
CALLS = {"_", "N_", "gettext"}


def in_code() -> set[str]:
    found: set[str] = set()
    for path in HERE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            first = node.args[0]
            if name in CALLS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def in_templates() -> set[str]:
    found: set[str] = set()
    for path in (HERE / "templates").glob("*.html"):
        for double, single in TEMPLATE_CALL.findall(path.read_text()):
            found.add(double or single)
    return found


def all_ids() -> set[str]:
    return in_code() | in_templates() | set(LABELS.values()) | set(ERRORS.values())
