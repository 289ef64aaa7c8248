"""Small helpers shared by the probes: paths under a file-system root and file reads that never raise."""
from __future__ import annotations

import os
from pathlib import Path


def under(root: str | os.PathLike, path: str) -> Path:
    """`path` (absolute, e.g. "/sys/class/thermal") inside `root` ("/" on a real machine, a fixture tree in
    tests).
    """
    return Path(root) / path.lstrip("/")


def read_text(path: Path) -> tuple[str | None, str | None]:
    """(content stripped, None) or (None, a message naming the file and why it could not be read)."""
    try:
        return path.read_text(errors="replace").strip().replace("\x00", ""), None
    except FileNotFoundError:
        return None, f"{path}: missing"
    except PermissionError:
        return None, f"{path}: permission denied"
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"


def read_number(path: Path) -> tuple[float | None, str | None]:
    """A file holding one number (sysfs style) -> (value, None) or (None, reason naming the file)."""
    text, err = read_text(path)
    if err:
        return None, err
    try:
        return float(text.split()[0]), None
    except (ValueError, IndexError):
        return None, f"{path}: unparsable content {text[:40]!r}"
