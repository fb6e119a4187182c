"""The reload child (supervisor.reload) on its own: what it answers, and what it stores."""

from __future__ import annotations

from pathlib import Path

from deploy.local.processes import wait_until
from state.env import open_state
from supervisor.boot import read_desired
from supervisor.reload import Reload, start_reload
from tests.support.pipelines import pipeline_yaml, write_config


def outcome_of(reload: Reload) -> str:
    outcomes: list[str] = []

    def answered() -> bool:
        outcome = reload.outcome()
        if outcome is not None:
            outcomes.append(outcome)
        return outcome is not None

    assert wait_until(answered, 30.0), "the reload child did not answer"
    assert not reload.process.is_alive()  # reaped
    return outcomes[0]


def spec(name: str) -> dict[str, object]:
    return pipeline_yaml(name, "mysql://cdc:secret@127.0.0.1:1/", "127.0.0.1:1", ["db.t"], "db.t")


def test_a_reload_stores_the_files_and_answers_ok(tmp_path: Path) -> None:
    open_state(tmp_path / "data").close()
    config = write_config(tmp_path / "config", spec("one"), spec("two"))
    assert outcome_of(start_reload(config, tmp_path / "data")) == ""
    assert read_desired(tmp_path / "data") == {"one": (1, "running"), "two": (1, "running")}


def test_a_reload_that_cannot_read_the_config_path_says_why_and_stores_nothing(
        tmp_path: Path) -> None:
    open_state(tmp_path / "data").close()
    missing = tmp_path / "missing"
    error = outcome_of(start_reload(missing, tmp_path / "data"))
    assert str(missing) in error, error
    assert read_desired(tmp_path / "data") == {}
