"""Results stores that several benchmark processes fill side by side (the refresh runs two units at once)."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from pathlib import Path


def update_json(path: Path, change: Callable[[dict], None]) -> dict:
    """Re-read the store at ``path`` ({} when there is none), apply ``change`` to it in place and write it back,
    all under an exclusive lock on ``path.lock``: a process that writes its own entry never drops one that another
    process wrote since it started. Returns the store as written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        store = json.loads(path.read_text()) if path.exists() else {}
        change(store)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(store, indent=2))
        tmp.replace(path)  # atomic: a reader never sees half a store
    return store
