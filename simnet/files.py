"""Files simnet writes and reads, safely: whole files renamed into place, report folders
swapped in only when complete, and input text read with a located error instead of a traceback.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simnet.errors import Problem, SimnetError

__all__ = ["read_text", "staged", "write_atomically"]


def read_text(path: str | Path, what: str = "") -> str:
    """A UTF-8 text file's contents; a file that cannot be read is a located ``SimnetError``."""
    file = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SimnetError(Problem(file, None, what, f"cannot read: {e.strerror or e}")) from None
    except UnicodeDecodeError:
        raise SimnetError(Problem(file, None, what, "not UTF-8 text")) from None


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` beside ``target`` and rename it into place: a reader sees the old file
    or the new one, never half of one, and a failed write leaves the old file."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.new")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged(outdir: Path) -> Iterator[Path]:
    """A fresh directory beside ``outdir`` to write into; on success it replaces ``outdir``,
    on any exception it is removed and ``outdir`` is left as it was."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise NotADirectoryError(f"{outdir} exists and is not a directory")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    staging = outdir.with_name(f".{outdir.name}.new-{tag}")
    staging.mkdir()  # honours the umask, unlike mkdtemp's 0700
    try:
        yield staging
        _swap(staging, outdir, tag)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap(staging: Path, outdir: Path, tag: str) -> None:
    """Put ``staging`` where ``outdir`` is: two renames, then remove the old folder."""
    old = None
    if outdir.exists():
        old = outdir.with_name(f".{outdir.name}.old-{tag}")
        os.replace(outdir, old)
    try:
        os.replace(staging, outdir)
    except BaseException:
        if old is not None:
            os.replace(old, outdir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
