"""Folders a generator owns: it writes only into a folder it created (or found empty) and
marked, and removes only the files it recorded writing there.

    folder = OwnedDir.claim(path, owner="asg_jax.data.synthetic")  # NotOwnedError if not ours
    folder.params                      # what the last completed generation recorded, or None
    folder.start(params)               # removes the previous generation's files, only those
    folder.record(path) ...            # every file written
    folder.finish()                    # the manifest: params + files, marks it complete

The marker `.asg_jax_owner.json` holds the owner, the parameters of the last generation, and
the relative paths of the files it wrote. A user's file in the folder (one that is not in the
manifest) is never written or removed; a non-empty folder without the marker is refused with
a message naming it.
"""
from __future__ import annotations

import json
import logging
import os

logger = logging.getLogger(__name__)

MARKER_FILE = ".asg_jax_owner.json"


class NotOwnedError(RuntimeError):
  """The folder holds files this generator did not write: it refuses to touch it."""


class OwnedDir:
  """A folder marked as a generator's own (see the module docstring)."""

  def __init__(self, path: str, owner: str, marker: dict):
    self.path, self.owner, self._marker = os.path.abspath(path), owner, marker
    self._files: list[str] = []

  @classmethod
  def claim(cls, path: str, owner: str, hint: str = "") -> "OwnedDir":
    """Create `path` (or take it when empty) and mark it; reopen it when already ours.

    Raises:
      NotOwnedError: `path` is a non-empty folder without our marker, a file, or another
        generator's folder. `hint` is appended to the message (what to do instead).
    """
    path = os.path.abspath(path)
    marker_path = os.path.join(path, MARKER_FILE)
    suffix = f" {hint}" if hint else ""
    if os.path.exists(path) and not os.path.isdir(path):
      raise NotOwnedError(f"{path} is a file, not a folder: {owner} writes only into a folder "
                          f"it creates.{suffix}")
    if os.path.isfile(marker_path):
      with open(marker_path) as f:
        marker = json.load(f)
      if marker.get("owner") != owner:
        raise NotOwnedError(f"{path} belongs to {marker.get('owner')!r}, not {owner}.{suffix}")
      return cls(path, owner, marker)
    if os.path.isdir(path) and os.listdir(path):
      entries = sorted(os.listdir(path))
      shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
      raise NotOwnedError(
          f"refusing to write into {path}: it holds {len(entries)} entries that {owner} did "
          f"not create ({shown}); it only writes into an empty folder or one it created "
          f"(marked by {MARKER_FILE}).{suffix}")
    os.makedirs(path, exist_ok=True)
    marker = {"owner": owner, "params": None, "complete": False, "files": []}
    _write_json(marker_path, marker)
    return cls(path, owner, marker)

  @property
  def params(self) -> dict | None:
    """The parameters of the last COMPLETED generation (None: none yet)."""
    return self._marker.get("params") if self._marker.get("complete") else None

  def start(self, params: dict) -> None:
    """Begin a generation: remove the previous generation's recorded files (only those)."""
    self.remove_generated()
    self._marker = {"owner": self.owner, "params": params, "complete": False, "files": []}
    self._files = []
    _write_json(os.path.join(self.path, MARKER_FILE), self._marker)

  def record(self, path: str) -> str:
    """Note that `path` (inside the folder) was written by this generation; returns it."""
    rel = os.path.relpath(os.path.abspath(path), self.path)
    if rel.startswith(os.pardir):
      raise ValueError(f"{path} is outside the owned folder {self.path}")
    self._files.append(rel)
    return path

  def finish(self) -> None:
    """Write the manifest: the generation is complete."""
    self._marker = {"owner": self.owner, "params": self._marker.get("params"), "complete": True,
                    "files": sorted(set(self._files))}
    _write_json(os.path.join(self.path, MARKER_FILE), self._marker)

  def remove_generated(self) -> int:
    """Delete the files the manifest lists (and folders left empty by that); returns how
    many files were removed. Anything else in the folder stays."""
    removed, dirs = 0, set()
    for rel in self._marker.get("files", []):
      full = os.path.normpath(os.path.join(self.path, rel))
      if not full.startswith(self.path + os.sep):
        continue
      if os.path.isfile(full):
        os.remove(full)
        removed += 1
      parent = os.path.dirname(full)
      while parent.startswith(self.path + os.sep):
        dirs.add(parent)
        parent = os.path.dirname(parent)
    for d in sorted(dirs, key=len, reverse=True):   # deepest first, only when empty
      try:
        os.rmdir(d)
      except OSError:
        pass
    kept = [e for e in os.listdir(self.path) if e != MARKER_FILE]
    if removed and kept:
      logger.info("%s: removed %d generated files; kept %d other entries", self.path, removed,
                  len(kept))
    return removed


def _write_json(path: str, value: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f)
  os.replace(tmp, path)
