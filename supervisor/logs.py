"""Logging: every child logs through multiprocessing-logging to the supervisor's stderr."""

from __future__ import annotations

import logging
import sys

import multiprocessing_logging

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    """Configure stderr logging; call before forking so children inherit the queue handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "pymysqlreplication"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    multiprocessing_logging.install_mp_handler()
