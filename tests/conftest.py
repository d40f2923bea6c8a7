"""Each area of the project keeps its fixtures in its own module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.peers",
    "tests.fixtures.client",
    "tests.fixtures.runtime",
    "tests.fixtures.s3",
    "tests.fixtures.auth",
]
