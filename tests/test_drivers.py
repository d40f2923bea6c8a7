"""Every storage driver passes the one conformance suite in tests/driver_suite.py.

To add a driver, add a branch to ``make_driver`` below: a factory returning a new independent
instance on the same storage each call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyreg.storage.filesystem import FilesystemDriver
from pyreg.storage.s3 import S3Driver, s3_config_from_dict
from tests.driver_suite import DriverSuite, MakeDriver


class TestDrivers(DriverSuite):
    @pytest.fixture(params=["filesystem", "s3"])
    def make_driver(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeDriver]:
        made: list[Any] = []
        if request.param == "filesystem":
            def factory() -> Any:
                return FilesystemDriver(tmp_path / "root")
        else:
            section = dict(request.getfixturevalue("s3_section"), redirect={"enabled": True, "expiry": "5m"})
            config = s3_config_from_dict(section)

            def factory() -> Any:
                driver = S3Driver(config)
                made.append(driver)
                return driver
        yield factory
        for driver in made:
            driver.close()
