"""Checks of the landing and lake folders a command is pointed at, before anything is created.

A mistyped ``--landing`` or ``--lake`` must be an error, not a new empty folder that a daemon
then watches forever, nor a lake scattered over a folder of someone else's files.
"""

from __future__ import annotations

from pathlib import Path

from ecom_stream.errors import ConfigError, EcomStreamError
from ecom_stream.storage.lake import TABLES, Lake

__all__ = ["check_lake_to_read", "check_lake_to_write", "landing_folder"]


def landing_folder(path: Path, *, create: bool) -> Path:
    """``path`` as an existing folder: refused when missing, unless ``create`` (``--create``)."""
    if path.is_dir():
        return path
    if path.exists() or path.is_symlink():
        raise ConfigError(f"the landing folder {path} is not a folder: check --landing")
    if not create:
        raise ConfigError(
            f"the landing folder {path} does not exist: check --landing, "
            "or pass --create to create it"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(f"cannot create the landing folder {path}: {reason}") from None
    return path


def check_lake_to_read(root: Path) -> None:
    """A reader (``status``, ``quarantine``) needs the lake folder to exist."""
    if root.is_dir():
        return
    if root.exists():
        raise EcomStreamError(f"{root.absolute()} is a file, not a lake folder: check --lake")
    raise EcomStreamError(
        f"no lake at {root.absolute()}: the folder does not exist; check --lake "
        "(a backfill or the daemon creates it)"
    )


def _layout_names(lake: Lake) -> set[str]:
    """The top-level names of a lake: its tables' first path parts and its folders."""
    names = {spec.path.split("/", 1)[0] for spec in TABLES.values()}
    layout = lake.layout
    return names | {layout.raw_dir.name, layout.quarantine_dir.name, layout.daemon_dir.name}


def check_lake_to_write(root: Path) -> None:
    """A writer (``backfill``, ``watch``) may create a lake only in a missing or empty folder.

    A folder already holding an ecom-stream lake, or only names of the lake's layout (a first
    run that was interrupted) and hidden files, is fine; any other file or folder in it means
    ``--lake`` points somewhere else by mistake, and nothing is written there.
    """
    lake = Lake(root)
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir():
        raise EcomStreamError(f"{lake.root} is a file, not a lake folder: check --lake")
    if lake.tables.exists():
        return
    names = _layout_names(lake)
    # Hidden names (.gitkeep, .DS_Store) are not someone's data: a checkout's lake/ holds one.
    foreign = sorted(p.name for p in root.iterdir() if p.name not in names and p.name[0] != ".")
    if foreign:
        more = len(foreign) - 3
        shown = ", ".join(foreign[:3]) + (f" and {more} more" if more > 0 else "")
        raise EcomStreamError(
            f"{lake.root} is not an ecom-stream lake and not empty (it holds {shown}): "
            "pass a new or empty folder with --lake"
        )


def check_new_lake(root: Path, live: Path) -> None:
    """Refuse ``root`` as the folder of a rebuilt lake unless it is new or empty (and not the
    live lake ``live``): a rebuild never writes over data."""
    if root.absolute() == live.absolute():
        raise ConfigError("--into must be a new folder, not the live lake")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(
            f"{root} is not empty (or not a folder): pass a new folder for the rebuilt lake"
        )
