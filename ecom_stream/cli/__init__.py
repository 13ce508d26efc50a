"""The ``ecom-stream`` command line: ``main`` parses and dispatches, ``commands`` runs each one."""

from ecom_stream.cli.main import main, run

__all__ = ["main", "run"]
