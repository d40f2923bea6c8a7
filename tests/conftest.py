"""Each area of the project keeps its fixtures in its own module under tests/fixtures/."""

import os

# pyreg run's default for root is --network bridge (pyreg0 and NAT in the namespace it runs in):
# no test may make those in the host's namespace. The network tests ask for bridge inside a
# network namespace of their own (tests/test_runtime_network.py).
os.environ["PYREG_NETWORK"] = "none"

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.peers",
    "tests.fixtures.client",
    "tests.fixtures.runtime",
    "tests.fixtures.s3",
    "tests.fixtures.auth",
]
