"""Evidence files are recognised by their content, whatever name or type they claim."""

import io
import zipfile
from pathlib import Path

import pytest

from shared.attachments import DOCX, ZIP, AttachmentStore, FileTooLarge, evidence_type, sniff


def docx_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("word/document.xml", "<w/>")
    return buf.getvalue()


@pytest.mark.parametrize("data,expected", [
    (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\nrest", "image/png"),
    (b"%PDF-1.7\n", "application/pdf"),
    (b"Plain complaint text \xe4\xb8\xad\n", "text/plain"),
    (b"MZ\x90\x00 an executable", None),
    (b"text with a NUL \x00 is binary", None),
])
def test_p_5_3_1_evidence_type_comes_from_the_content(data, expected):
    assert evidence_type(data[:64], data) == expected


def test_p_5_3_1_office_files_are_told_from_other_zips():
    assert sniff(docx_bytes()[:64], docx_bytes()) == DOCX
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("payload.exe", "x")
    assert sniff(other.getvalue()[:64], other.getvalue()) == ZIP
    assert evidence_type(other.getvalue()[:64], other.getvalue()) is None


def test_p_5_3_1_store_keeps_one_copy_by_hash_and_refuses_oversize(tmp_path: Path):
    store = AttachmentStore(tmp_path)
    sha = store.put_bytes(b"%PDF-1.7 report")
    assert store.put_bytes(b"%PDF-1.7 report") == sha
    assert store.path(sha).read_bytes() == b"%PDF-1.7 report"
    with pytest.raises(FileTooLarge):
        store.put_stream(io.BytesIO(b"x" * 100), max_bytes=10)
    assert list((tmp_path / "tmp").iterdir()) == []  # no half-written file is left
