"""Build the storage driver the configuration asks for."""

from __future__ import annotations

from pyreg.registry.config import Config
from pyreg.storage.driver import Driver


def make_driver(config: Config) -> Driver:
    """The configured driver: filesystem (the embedded default) or s3."""
    storage = config.storage
    if storage.s3 is not None:
        from pyreg.storage.s3 import S3Driver  # type: ignore[import-not-found,unused-ignore]

        driver: Driver = S3Driver.from_config(storage.s3)
        return driver
    from pyreg.storage.filesystem import FilesystemDriver

    assert storage.filesystem is not None
    return FilesystemDriver(storage.filesystem.rootdirectory)
