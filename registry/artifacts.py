"""Content-addressed artifact store: a file lives at ``ab/abcdef...`` by its sha256, written atomically."""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgejoule.files import write_atomic


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def remove(self, sha256: str) -> None:
        """Delete the file of ``sha256`` (gone already: nothing to do)."""
        self.path(sha256).unlink(missing_ok=True)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            write_atomic(target, data)
        return digest
