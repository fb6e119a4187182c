"""Chaos: kill -9 of the pipeline's worker at random points during a steady load."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.local.processes import is_zombie
from state.records import BinlogPosition
from tests.support.chaos import (
    DELIVERY_MODES,
    ChangeWriter,
    DeliveryMode,
    assert_delivered,
    assert_replays_bounded,
    committed_rows,
    create_table,
    read_checkpoint,
    read_delivery,
    start_pipeline,
)
from tests.support.pipelines import unique
from tests.support.service import Service

pytestmark = pytest.mark.services
KILLS = 20


@pytest.mark.parametrize("mode", DELIVERY_MODES, ids=lambda m: m.name)
def test_random_worker_kills_lose_nothing_and_keep_key_order(
        mariadb: Any, kafka: Any, tmp_path: Path, mode: DeliveryMode) -> None:
    """Twenty times: let a steady insert/update load run 0.3-1.5 s, kill -9 the worker, read
    the durable checkpoint once it is dead, wait until a new worker runs the pipeline.

    Kafka must then hold every committed change (no gap), nothing invented, the table's final
    row as the last message of each key, each key in one partition in commit order, and
    duplicates only at or after the oldest checkpoint taken at a kill, each event at most once
    more per kill whose checkpoint was at or before it.
    """
    db = unique("chaos_kill")
    topic = create_table(mariadb, kafka, db)
    service = start_pipeline(tmp_path, mode, mariadb.cdc_dsn(), kafka.bootstrap, db)
    writer = ChangeWriter(lambda: mariadb.connect(db))
    checkpoints: list[BinlogPosition] = []
    try:
        writer.start()
        for _ in range(KILLS):
            time.sleep(random.uniform(0.3, 1.5))
            checkpoints.append(kill_worker(service))
        writer.stop()
        expected = committed_rows(mariadb, db)
        records = read_delivery(kafka.bootstrap, topic, mode, writer, expected)
        assert_delivered(records, writer, expected, mode, checkpoints)
        assert_replays_bounded(records, checkpoints)
    finally:
        writer.stop()
        service.close()


def kill_worker(service: Service) -> BinlogPosition:
    """kill -9 the worker; its durable checkpoint once it is dead; wait for its successor."""
    victim = service.worker_pid("p")
    os.kill(victim, signal.SIGKILL)
    service.wait_until(lambda: is_zombie(victim), 10, f"worker {victim} gone")
    checkpoint = read_checkpoint(service.data_dir)
    assert checkpoint is not None
    service.wait_until(lambda: service.status("p") == "running"
                       and service.worker_pid("p") != victim, 90, "a new worker running p")
    return checkpoint

