"""Content hashes of files and folders: what a cache key or a checkpoint's fingerprint
compares. Standard library only, so the trainer can use it."""

from __future__ import annotations

import hashlib
from pathlib import Path

_memo: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: large models hash once


def file_sha256(path: str | Path) -> str:
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _memo[key] = h.hexdigest()
    return _memo[key]


def path_sha256(path: str | Path) -> str:
    """Content hash of a file, or of a folder (relative names + file hashes); 'missing' if absent."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()
