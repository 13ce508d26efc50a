"""Plain files of the lake: raw copies, quarantined files and their reasons, markers.

The only place that writes files outside Delta (atomic write, fsync, os.replace)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ecom_stream.errors import LakeError
from ecom_stream.storage.layout import MAX_STORED_NAME_BYTES, TEMP_NAME, Layout

__all__ = ["Blobs", "atomic_write", "stored_name"]

logger = logging.getLogger(__name__)


def atomic_write(
    target: Path, data: bytes, *, durable: bool = True, tmp_dir: Path | None = None
) -> None:
    """Write to a temporary name (fsync'd when ``durable``), then rename: readers never see
    half a file, and a durable file survives a power cut once this returns. ``tmp_dir`` (on
    the same filesystem) holds the temporary file instead of the target's folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if tmp_dir is None:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    else:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f".{target.parent.name[:16]}-{target.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        # A full disk or an I/O error: leave no partial file behind (a kill is cleaned up by
        # the next writer, Blobs.remove_stale_temp_files).
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def stored_name(name: str) -> str:
    """A safe name to store ``name`` (valid UTF-8, one line) under: itself when short
    enough, else its start and a digest of the whole (distinct names stay distinct)."""
    raw = name.encode("utf-8", "backslashreplace")
    if len(raw) <= MAX_STORED_NAME_BYTES and not name.startswith("."):
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    head = raw[: MAX_STORED_NAME_BYTES - 64].decode("utf-8", "ignore").lstrip(".")
    return f"{head}-{digest}"


class Blobs:
    """The raw/ and quarantine/ file stores of one lake."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def write_raw_file(self, batch_id: str, name: str, data: bytes) -> Path:
        """Write a file of a batch's raw folder (not fsync'd: synced once per micro-batch)."""
        target = self.layout.raw_path(batch_id, name)
        atomic_write(target, data, durable=False, tmp_dir=self.layout.raw_tmp_dir)
        return target

    def store_raw(self, batch_id: str, name: str, data: bytes, meta: Mapping[str, Any]) -> Path:
        """Keep an immutable copy of a received file (content addressed; written once)."""
        return self._keep_raw(
            batch_id, name, meta, lambda: self.write_raw_file(batch_id, name, data)
        )

    def _keep_raw(
        self, batch_id: str, name: str, meta: Mapping[str, Any], write: Callable[[], Any]
    ) -> Path:
        """Write the raw copy (``write``) then its meta.json, once; a failure is a LakeError
        that leaves the file in landing."""
        target = self.layout.raw_path(batch_id, name)
        if not target.exists():
            try:
                write()
                meta_json = json.dumps(dict(meta), indent=2).encode()
                self.write_raw_file(batch_id, "meta.json", meta_json)
            except OSError as exc:
                raise LakeError(
                    f"cannot keep the raw copy {target}: {exc.strerror or exc}; the file "
                    "stays in landing (if the lake's disk is full, free space on it)"
                ) from exc
        return target

    def raw_batches(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every raw copy with its metadata, in file-name order."""
        found = []
        if self.layout.raw_dir.exists():
            for meta_path in self.layout.raw_dir.glob("*/*/meta.json"):
                meta = json.loads(meta_path.read_text())
                found.append((meta_path.parent / meta["name"], meta))
        return sorted(found, key=lambda item: (item[1]["name"], item[1]["batch_id"]))

    def store_quarantined(
        self, source: Path, data: bytes | None, name: str, reason: Mapping[str, Any]
    ) -> Path:
        """Copy a rejected file into quarantine/ with its ``.reason.json``; returns the new path.

        ``name`` is the file's display name (``read.display_name``); the file is stored under
        ``stored_name(name)``."""
        self.layout.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target, other = self._quarantine_targets(name, str(reason["batch_id"]))
        if os.path.lexists(target) and not _same_entry(target, source, data):
            target = other
        reason_path = target.with_name(target.name + ".reason.json")
        text = json.dumps(dict(reason), indent=2, default=str).encode()
        if source.is_symlink():
            if not target.is_symlink():
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.unlink(missing_ok=True)
                os.symlink(os.readlink(source), tmp)
                os.replace(tmp, target)
        elif data is not None:
            atomic_write(target, data)
        else:
            # Not read (too large, unreadable, not a regular file): the reason goes first, so
            # the file is never in quarantine without it, then the file itself, whole.
            atomic_write(reason_path, text)
            if not _same_entry(target, source, None) and not _keep_unread(source, target):
                left = {
                    **reason,
                    "location": str(source),
                    "fix": "it stays in landing (it could not be moved here): fix the cause "
                    "the reason names; the file is then read by the next scan of landing",
                }
                atomic_write(reason_path, json.dumps(left, indent=2, default=str).encode())
            return target
        atomic_write(reason_path, text)
        return target

    def _quarantine_targets(self, name: str, batch_id: str) -> tuple[Path, Path]:
        """Where a file of this display name is stored, and where if another file holds that."""
        target = self.layout.quarantine_dir / stored_name(name)
        stem, dot, ext = target.name.partition(".")
        return target, self.layout.quarantine_dir / f"{stem}.{batch_id[:12]}{dot}{ext}"

    def quarantine_reason(self, stored: Path) -> dict[str, Any] | None:
        """The ``.reason.json`` of a quarantined entry (``quarantined_files``), or None when
        it is missing or unreadable."""
        try:
            reason = json.loads(stored.with_name(stored.name + ".reason.json").read_text())
        except (OSError, ValueError):
            return None
        return reason if isinstance(reason, dict) else None

    def holds(self, stored: str) -> bool:
        """Whether quarantine/ holds an entry stored under the name ``stored``."""
        return (self.layout.quarantine_dir / stored).exists()

    def left_in_landing(self, name: str, batch_id: str) -> bool:
        """Whether the file recorded as quarantined under ``batch_id`` could not be moved into
        quarantine and stays in landing (its reason file says where)."""
        for target in self._quarantine_targets(name, batch_id):
            try:
                reason = json.loads(target.with_name(target.name + ".reason.json").read_text())
            except (OSError, ValueError):
                continue
            if reason.get("batch_id") == batch_id:
                return bool(reason.get("location"))
        return False

    def remove_stale_temp_files(self) -> int:
        """Delete the partial files a writer that died (or hit a full disk) left in ``raw/``
        and ``quarantine/``; returns how many. Only for the process holding the writer lock:
        no other process writes there, and this one's own temporary files are kept.

        Two flat folders are listed (raw files are written in ``raw/.tmp``), so this does not
        grow with the lake; a lake written before that is swept in full once (a marker)."""
        removed = 0
        mine = str(os.getpid())
        folders = [self.layout.raw_tmp_dir, self.layout.quarantine_dir]
        swept = self.layout.daemon_dir / "raw-temp-files-swept"
        if not swept.exists() and self.layout.raw_dir.is_dir():
            folders += [Path(f) for f, _, _ in os.walk(self.layout.raw_dir)]
        for folder in folders:
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                match = TEMP_NAME.match(name)
                if match and match.group(1) != mine:
                    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
        if not swept.exists():
            with contextlib.suppress(OSError):  # swept again next time
                swept.parent.mkdir(parents=True, exist_ok=True)
                swept.touch()
        if removed:
            logger.info("removed %d partial file(s) left by an interrupted write", removed)
        return removed

    def quarantined_files(self) -> list[Path]:
        if not self.layout.quarantine_dir.exists():
            return []
        # Every quarantined entry is listed (a name starting with "_" too); not the reason
        # files, temporary files (".") or folders (the _records table). A file that could not
        # be moved here is listed by its reason file while it is still in landing.
        found = []
        for p in self.layout.quarantine_dir.iterdir():
            if p.name.startswith(".") or (p.is_dir() and not p.is_symlink()):
                continue
            if not p.name.endswith(".reason.json"):
                found.append(p)
                continue
            entry = p.with_name(p.name.removesuffix(".reason.json"))
            if not os.path.lexists(entry):
                try:
                    location = json.loads(p.read_text()).get("location")
                except (OSError, ValueError):
                    continue
                if location and os.path.lexists(location):
                    found.append(entry)
        return sorted(found)

    def remove_landed(self, path: Path) -> None:
        """Remove a handled file from landing (gone already: nothing to do)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def read_landed(self, path: Path) -> bytes | None:
        """The bytes of a file in landing, read again (None: it is gone)."""
        return path.read_bytes() if path.exists() else None

    def write_piece_warnings(self, batch_id: str, arrival: str, data: bytes) -> None:
        """Keep the domain warnings of one piece of a large file in its raw folder (durable:
        written before the piece's merge, which a replay could not compute them after)."""
        target = self.layout.raw_path(batch_id, f"warnings-{arrival}.json")
        atomic_write(target, data, tmp_dir=self.layout.raw_tmp_dir)

    def read_piece_warnings(self, batch_id: str, arrival: str) -> bytes | None:
        """The domain warnings kept by ``write_piece_warnings`` (None: none kept)."""
        target = self.layout.raw_path(batch_id, f"warnings-{arrival}.json")
        return target.read_bytes() if target.exists() else None

    def store_raw_copy(
        self,
        batch_id: str,
        name: str,
        fd: int,
        size: int,
        meta: Mapping[str, Any],
        check: Callable[[], None] | None = None,
    ) -> Path:
        """``store_raw`` of a file too large to hold in memory: its ``size`` bytes copied from
        the open descriptor ``fd`` (from offset 0) without passing through memory whole, under
        a temporary name renamed into place (not fsync'd: synced with its micro-batch, as
        ``store_raw``). ``check`` runs before the rename: it raises when the source changed
        while being copied, and nothing is kept."""
        target = self.layout.raw_path(batch_id, name)
        return self._keep_raw(
            batch_id, name, meta, lambda: self._copy_raw_file(target, fd, size, check)
        )

    def remove_raw_copy(self, batch_id: str, name: str) -> None:
        """Remove a raw copy kept by ``store_raw_copy`` whose batch left nothing in the lake
        (its file changed before its first commit): a rebuild must not merge it."""
        folder = self.layout.raw_path(batch_id, name).parent
        for entry in (name, "meta.json"):
            with contextlib.suppress(FileNotFoundError):
                (folder / entry).unlink()
        with contextlib.suppress(OSError):  # not empty: other files of the batch stay
            folder.rmdir()

    def _copy_raw_file(
        self, target: Path, fd: int, size: int, check: Callable[[], None] | None
    ) -> None:
        """Copy ``size`` bytes of ``fd`` to ``target`` through a temporary file in raw/.tmp
        (the name ``atomic_write`` gives it, so a stale one is swept the same way)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = self.layout.raw_tmp_dir
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f".{target.parent.name[:16]}-{target.name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as out:
                copied = _copy_range(fd, out.fileno(), size)
            if check is not None:
                check()
            if copied != size:
                raise OSError(errno.EIO, f"the file ended after {copied:,} of {size:,} bytes")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def _same_entry(target: Path, source: Path, data: bytes | None) -> bool:
    """Whether quarantine's ``target`` already holds this file (a retry after a crash)."""
    try:
        st, src = os.lstat(target), os.lstat(source)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) == (src.st_dev, src.st_ino):
        return True  # a hard link to the very file
    if data is None or not stat.S_ISREG(st.st_mode) or stat.S_ISLNK(src.st_mode):
        return False
    return st.st_size == len(data) and target.read_bytes() == data


def _keep_unread(source: Path, target: Path) -> bool:
    """Put a file that was not read into quarantine whole, never through memory: a hard link
    (landing's name is removed after the ledger row, like any handled file), else a copy by
    the kernel (a readable regular file, e.g. one over the size limit, on another disk),
    else a rename (needs no read permission). False when it must stay in landing."""
    with contextlib.suppress(OSError):
        os.link(source, target, follow_symlinks=False)
        return True
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(source).st_mode):
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                shutil.copyfile(source, tmp, follow_symlinks=False)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, target)
                return True
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    try:
        os.rename(source, target)
    except OSError as exc:
        # %r: the name may hold a line break
        logger.warning("cannot move %r into quarantine (%s): it stays in landing", str(source), exc)
        return False
    return True


def sync_filesystem(path: Path) -> None:
    """``syncfs`` on the lake's filesystem (Linux), else ``sync``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def _copy_range(src: int, dst: int, size: int) -> int:
    """Copy the first ``size`` bytes of ``src`` to ``dst`` by the kernel (``sendfile``), else
    in 8 MB blocks; returns how many were copied (fewer: ``src`` ended first)."""
    done = 0
    with contextlib.suppress(OSError, AttributeError):  # no sendfile between these files
        while done < size:
            sent = os.sendfile(dst, src, done, size - done)
            if sent == 0:
                return done
            done += sent
        return done
    while done < size:
        block = os.pread(src, min(8 << 20, size - done), done)
        if not block:
            break
        view = memoryview(block)
        while view:
            written = os.pwrite(dst, view, done)
            done, view = done + written, view[written:]
    return done
