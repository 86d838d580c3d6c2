"""The settings of a farm that runs for a year: retention, abandoned uploads, how long workers wait for the schema."""

from __future__ import annotations

import pytest

from farm.config import ConfigError, load_settings


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings({"FARM_INSTANCE_DIR": "/tmp/farm-settings-test", **env}, dotenv_path=None)


def test_defaults_keep_jobs_forever() -> None:
    conf = settings()
    assert (conf.retention_days, conf.multipart_abort_hours, conf.schema_wait_seconds) == (None, 24.0, 300.0)
    assert conf.describe()["FARM_RETENTION_DAYS"] == "(keep forever)"


def test_values_are_read() -> None:
    conf = settings(FARM_RETENTION_DAYS="90", FARM_MULTIPART_ABORT_HOURS="1.5", FARM_SCHEMA_WAIT_SECONDS="20")
    assert (conf.retention_days, conf.multipart_abort_hours, conf.schema_wait_seconds) == (90.0, 1.5, 20.0)
    assert conf.describe()["FARM_RETENTION_DAYS"] == "90"


@pytest.mark.parametrize("raw", ["0", "-3", "forever"])
def test_a_retention_that_is_no_number_of_days_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(ConfigError, match="FARM_RETENTION_DAYS"):
        settings(FARM_RETENTION_DAYS=raw)
