"""The per-user limits and request rates as settings: unset means no limit (or the default rate), a typo fails at
start-up with one line naming the variable, and the counts live in the broker's Redis when there is one."""

import pytest

from farm.config import ConfigError, load_settings


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings({"FARM_INSTANCE_DIR": "/tmp/farm-unit-limits", **env}, dotenv_path=None)


def test_unset_limits_are_no_limits_and_rates_have_defaults():
    plain = settings()
    assert (plain.user_max_active_jobs, plain.user_max_queued_frames) == (None, None)
    assert (plain.submit_limit, plain.login_limit) == ("120 per minute", "30 per minute")
    assert plain.rate_limit_storage == "memory://"  # the embedded defaults: no Redis


def test_limits_and_rates_are_read_and_off_turns_a_rate_off():
    tight = settings(
        FARM_USER_MAX_ACTIVE_JOBS="3",
        FARM_USER_MAX_QUEUED_FRAMES="500",
        FARM_SUBMIT_LIMIT="5/second;100/hour",
        FARM_LOGIN_LIMIT="off",
        FARM_BROKER_URL="redis://cache:6379/0",
    )
    assert (tight.user_max_active_jobs, tight.user_max_queued_frames) == (3, 500)
    assert (tight.submit_limit, tight.login_limit) == ("5/second;100/hour", None)
    assert tight.rate_limit_storage == "redis://cache:6379/0"
    assert tight.describe()["FARM_LOGIN_LIMIT"] == "off"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("FARM_USER_MAX_ACTIVE_JOBS", "0", "at least 1"),
        ("FARM_USER_MAX_QUEUED_FRAMES", "many", "whole number"),
        ("FARM_SUBMIT_LIMIT", "3 per fortnight", "a rate such as"),
        ("FARM_LOGIN_LIMIT", "ten", "a rate such as"),
    ],
)
def test_a_bad_value_names_the_variable(name, value, words):
    with pytest.raises(ConfigError, match=name) as refused:
        settings(**{name: value})
    assert words in str(refused.value)
