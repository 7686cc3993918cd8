"""Results files that several benchmark processes fill side by side (the refresh runs two units at once)."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path


def update_text(path: Path, change: Callable[[str | None], str]) -> str:
    """Re-read ``path`` (None when there is none), write back ``change`` of it, all under an exclusive lock on
    ``path.lock``: a process that rewrites its own part never drops a part another process wrote since it
    started. The write is atomic (a reader never sees half a file). Returns the text written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = change(path.read_text() if path.exists() else None)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return text


def update_json(path: Path, change: Callable[[dict], None]) -> dict:
    """:func:`update_text` for a JSON store ({} when there is none): ``change`` edits the store in place.
    Returns the store as written."""
    store: dict = {}

    def apply(text: str | None) -> str:
        store.update(json.loads(text) if text else {})
        change(store)
        return json.dumps(store, indent=2)

    update_text(path, apply)
    return store
