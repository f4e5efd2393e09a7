"""Evidence files (P-5.3.1): recognised by their content, kept once by sha256.

The attachment store is a filesystem volume, `<dir>/<sha[:2]>/<sha>`, shared by
intake (uploads) and notify (mail attachments). Writes go to `<dir>/tmp` and are
renamed into place, so a reader sees a whole file or none. MongoDB holds only the
metadata (FerretDB v1 has no GridFS).
"""

import codecs
import hashlib
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZIP = "application/zip"
HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
EVIDENCE_TYPES = ("image/jpeg", "image/png", "image/tiff", "image/gif", "image/webp",
                  "image/heic", "application/pdf", "text/plain", DOCX, XLSX)
EVIDENCE_NAMES = "JPEG, PNG, TIFF, GIF, WebP, HEIC, PDF, plain text (UTF-8), DOCX, XLSX"
HEAD_BYTES = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")

Source = Path | bytes


def sniff(head: bytes, source: Source) -> str | None:
    """The type from the content's magic bytes (not from what the sender says).

    `source` (the whole file, on disk or in memory) is opened only for zips; a zip
    that is neither DOCX nor XLSX is `application/zip`. None: not recognised."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in HEIC_BRANDS:
        return "image/heic"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"PK\x03\x04"):
        return _office_type(source)
    return None


def _office_type(source: Source) -> str:
    try:
        with zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source)) as z:
            names = set(z.namelist())
    except zipfile.BadZipFile:
        return ZIP
    if "word/document.xml" in names:
        return DOCX
    if "xl/workbook.xml" in names:
        return XLSX
    return ZIP


def is_utf8_text(source: Source) -> bool:
    """UTF-8 without control characters other than tab, newlines and form feed."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    stream: BinaryIO = open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)
    with stream:
        try:
            while chunk := stream.read(1 << 20):
                if _CONTROL.search(decoder.decode(chunk)):
                    return False
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def evidence_type(head: bytes, source: Source) -> str | None:
    """An allowed evidence type for this content, or None."""
    detected = sniff(head, source)
    if detected is None and is_utf8_text(source):
        return "text/plain"
    return detected if detected in EVIDENCE_TYPES else None


class FileTooLarge(Exception):
    pass


class DamagedFile(Exception):
    """A stored file whose bytes no longer hash to its name: never to be sent as it is."""


class AttachmentStore:
    """Files by content hash on a filesystem volume (S3-compatible storage where deployed)."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def read(self, sha: str) -> bytes:
        """The file's bytes, checked against its sha256. FileNotFoundError if the store does
        not hold it; DamagedFile if its content changed. Blocking: run it in a thread."""
        data = self.path(sha).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise DamagedFile(f"The stored file {sha} no longer matches its sha256.")
        return data

    def put_bytes(self, data: bytes) -> str:
        """Store once; returns the sha256. Blocking: run it in a thread."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if final.exists() and final.stat().st_size == len(data):
            return sha
        return self.put_stream(io.BytesIO(data), len(data))[0]

    def put_stream(self, src: BinaryIO, max_bytes: int,
                   check: Callable[[bytes, Path], None] | None = None) -> tuple[str, int]:
        """Copy, hash and (with `check(head, tmp_path)`, which may raise) vet a file before
        it becomes visible; returns (sha256, size). FileTooLarge past `max_bytes`. Blocking."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir)
        tmp = Path(name)
        try:
            digest, size, head = hashlib.sha256(), 0, b""
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FileTooLarge(f"The file is larger than the limit of "
                                           f"{max_bytes} bytes.")
                    digest.update(chunk)
                    out.write(chunk)
                    head += chunk[:max(0, HEAD_BYTES - len(head))]
                out.flush()
                os.fsync(out.fileno())
            if check:
                check(head, tmp)
            final = self.path(digest.hexdigest())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)  # atomic: a reader sees the whole file or none
            return digest.hexdigest(), size
        finally:
            tmp.unlink(missing_ok=True)
