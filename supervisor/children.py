"""Entry points of the forked children. They import the api and the data plane only after the
fork, so the supervisor itself never loads librdkafka, mysql-replication or the web stack."""

from __future__ import annotations

from typing import Any


def run_api(*args: Any) -> None:
    from api.main import api_main

    api_main(*args)


def run_worker(*args: Any) -> None:
    from workers.main import worker_main

    worker_main(*args)
