"""Each area of the project keeps its fixtures in its own module under tests/fixtures/."""

import os
from collections.abc import Iterator

import pytest

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


_HOST_LINKS = "/sys/class/net"


def _pyreg_links() -> set[str]:
    """The host namespace's network interfaces that pyreg's runtime names (pyreg0, user networks)."""
    try:
        return {name for name in os.listdir(_HOST_LINKS) if name.startswith("pyreg")}
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def _host_network_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test that leaves a pyreg bridge in the host's network namespace: bridged
    containers belong in a namespace the test makes (see PYREG_NETWORK above)."""
    before = _pyreg_links()
    yield
    made = _pyreg_links() - before
    if made:
        pytest.fail(f"{request.node.nodeid} made {', '.join(sorted(made))} in the host's network "
                    "namespace (run bridged containers in a network namespace of the test's own)",
                    pytrace=False)
