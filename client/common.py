"""What every client command shares: common flags, the store, errors as one line on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

EXIT_ERROR = 1


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _ca_file_action() -> type[argparse.Action]:
    """``--ca-file``: checked while parsing, and recorded in ``client.config`` so that every
    registry connection the command makes trusts it (no command has to pass it down). Made
    when a parser is (argparse is not imported by a command that parses plainly)."""
    import argparse

    class CAFile(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: Any, option_string: str | None = None) -> None:
            import os

            path = str(values)
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                parser.error(f"--ca-file {path}: not a readable file")
            from pyreg.client import config

            config.set_ca_file_flag(path)
            setattr(namespace, self.dest, path)

    return CAFile


# parse_plain's view of add_network(transfers=True) and add_json: option -> dest
# (tests/test_cli_fast_parse.py checks these against the argparse parsers)
TRANSFER_FLAGS = {"--insecure": "insecure", "-q": "quiet", "--quiet": "quiet", "--json": "json"}
TRANSFER_VALUES = {"--parallel": "parallel"}
_TRANSFER_DESTS = {"insecure": False, "ca_file": None, "parallel": None, "quiet": False, "json": False}


def parse_plain(argv: list[str], flags: dict[str, str], values: dict[str, str],
                positionals: tuple[str, ...], optional: int = 0) -> Any:
    """A transfer command's arguments without argparse (its import, gettext's and the parser
    cost a pull ~5-8 ms of CPU): a namespace as argparse would make, or None when ``argv`` is
    anything but plain — options spelled exactly (``--opt VALUE`` / ``--opt=VALUE``, one short
    option per word), values not starting with ``-``, ``--parallel`` a plain positive number,
    then the positionals (the last ``optional`` of them may be left out). ``--ca-file``, help,
    ``--`` and every error are argparse's: it parses the whole line again."""
    from types import SimpleNamespace

    from pyreg.storage.plainargs import plain_options

    parsed = plain_options(argv, {**TRANSFER_FLAGS, **flags}, {**TRANSFER_VALUES, **values},
                           types={"parallel": _plain_parallel})
    if parsed is None:
        return None  # -h, --ca-file, --, an abbreviation, a typo: argparse says what it is
    options, words = parsed
    if not len(positionals) - optional <= len(words) <= len(positionals):
        return None
    out: dict[str, Any] = {**_TRANSFER_DESTS, **options}
    out.update(dict.fromkeys(positionals))
    out.update(zip(positionals, words, strict=False))
    return SimpleNamespace(**out)


def _plain_parallel(text: str) -> int:
    """--parallel as parse_plain takes it: a plain number (argparse judges anything else)."""
    if not (text.isascii() and text.isdigit() and len(text) < 7):
        raise ValueError(text)
    return int(text)


def add_network(parser: argparse.ArgumentParser, transfers: bool = False) -> None:
    parser.add_argument("--insecure", action="store_true",
                        help="allow plain HTTP and unverified TLS for this registry")
    parser.add_argument("--ca-file", action=_ca_file_action(), metavar="FILE",
                        help="also trust the CA certificates (PEM) in FILE, beside the system store "
                             "and /etc/docker|containers/certs.d/HOST:PORT/*.crt")
    if transfers:
        parser.add_argument("--parallel", type=int, default=None, metavar="N",
                            help="blobs transferred at once (default 6)")
        parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def registry_name(text: str | None) -> str:
    """The registry a REGISTRY argument names (host[:port], no scheme or trailing slash); the
    configured default when none is given."""
    import re

    from pyreg.storage.reference import DOMAIN_PATTERN, default_registry

    name = (text or default_registry()).removeprefix("https://").removeprefix("http://").rstrip("/")
    if not re.fullmatch(DOMAIN_PATTERN, name):
        raise ValueError(f"invalid registry {text!r}: expected host[:port]")
    return name


def remote(registry: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    """A ``RegistryClient`` for ``registry`` honouring the command's ``--insecure``; httpx is
    imported here, only by commands that talk to a registry (fast start-up for the rest)."""
    lean_httpx()
    from pyreg.client.remote import connect

    return connect(registry, insecure=args.insecure, **kwargs)


def emit(args: argparse.Namespace, doc: Any, text: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
    elif text is not None:
        print(text)


def print_format(fmt: str, items: list[Any], headers: dict[str, str] | None = None) -> int:
    """``--format TEMPLATE`` (storage/gotemplate.py)."""
    from pyreg.storage.gotemplate import print_format as render

    return render(fmt, items, headers)


def emit_transfer(args: argparse.Namespace, result: Any) -> None:
    """A push, pull or copy result: JSON with --json, else ``reference: digest`` unless -q."""
    emit(args, result.as_json(), None if args.quiet else f"{result.reference}: {result.digest}")


def warn_platform(store: Any, result: Any, requested: str | None = None) -> None:
    """After a pull: docker's warning on stderr when the image (``result``: digest and media type
    of the pulled manifest) is not for this host — unless ``--platform`` asked for it."""
    if requested:
        return
    from pyreg.storage import mediatypes
    from pyreg.storage.graph import platform_warning

    try:
        if result.media_type not in mediatypes.IMAGE_MANIFESTS:
            return
        manifest = store.read_manifest(result.digest, result.media_type)
        config = store.read_json(str(manifest.config.digest)) if manifest.config is not None else {}
    except Exception:  # the pull itself worked; a warning is not worth failing it
        return
    if (warning := platform_warning(config)) is not None:
        print(warning, file=sys.stderr)


def progress(args: argparse.Namespace) -> Any:
    from pyreg.client.progress import Progress

    # Bars on a terminal (stderr); otherwise plain lines on stdout, as docker pull does, so that
    # stderr carries only the one-line error. --json and -q turn them off.
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        return Progress(enabled=False)
    if sys.stderr.isatty():
        return Progress(stream=sys.stderr)
    return Progress(stream=sys.stdout)


def store(create: bool = True) -> Any:
    """The local store; None when ``create`` is off and there is none yet (listing a store that
    does not exist needs no directory made)."""
    from pyreg.storage.localstore import LocalStore

    if not create:
        root = LocalStore.default_root()
        if not (root / "index.json").is_file():
            return None
        return LocalStore(root)
    return LocalStore()


def _is_cli() -> bool:
    """True when this process is the pyreg command (not a test or a library user)."""
    import os

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name in ("pyreg.__main__", "pyreg.client.cli"):
        return True
    return os.path.basename(sys.argv[0]) == "pyreg"


def lean_httpx() -> None:
    """Import httpx without what a CLI client process never uses (its own CLI, anyio, trio).

    httpx imports its command-line tool (rich, pygments, click) and its optional decoders, and
    httpcore probes for anyio and trio; in a ``pyreg`` process that only makes sync requests that
    is over half of the import time. Only done when this process *is* the pyreg CLI, so nothing
    that imports the client as a library (tests, the registry) is affected; the blocks are lifted
    right after the import.
    """
    if not _is_cli() or "httpx" in sys.modules:
        return
    # zstandard, brotli: httpx's optional decoders. We ask for gzip and deflate only, bounded
    # reads refuse any other encoding (storage/remote/limits.py), and a blob still encoded fails
    # its digest check.
    blocked = [m for m in ("httpx._main", "anyio", "trio", "zstandard", "brotli", "brotlicffi")
               if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401 - httpx imports it lazily, after the blocks would be lifted
        import httpx  # noqa: F401
    finally:
        for m in blocked:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]


def container_images() -> dict[str, list[str]]:
    """Manifest digest -> names of the containers (any state) that the runtime holds for it.

    The one place the client asks the runtime about containers for image removal: their layers
    are overlay lower dirs, so rmi refuses (or, forced, untags but keeps the layers) and prune keeps
    them."""
    try:
        from pyreg.runtime.api import containers_by_image
    except ImportError:
        return {}
    return containers_by_image()


def keep_digests(in_use: dict[str, list[str]]) -> tuple[Any, ...]:
    from pyreg.storage.digest import Digest, DigestError

    out = []
    for text in in_use:
        try:
            out.append(Digest.parse(text))
        except DigestError:
            continue
    return tuple(out)


def guard(body: Callable[[], int | None]) -> int:
    """Run a command; known failures become one clear line on stderr and exit 1."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print("pyreg: interrupted (partial downloads are kept, invisible, for the next pull)",
              file=sys.stderr)
        if _is_cli():
            # transfer threads may sit in a socket read: do not wait for them to notice
            sys.stdout.flush()
            sys.stderr.flush()
            import os

            os._exit(130)
        return 130
    except BrokenPipeError:
        raise  # the reader of our output went away: the CLI ends quietly (client/cli.py)
    except Exception as exc:
        print(f"pyreg: {describe(exc)}", file=sys.stderr)
        return EXIT_ERROR


def describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None:
        from pyreg.client.cli import os_error_line

        return os_error_line(exc)
    if name == "DigestMismatchError":
        return f"{exc} (nothing was kept)"
    if name in ("ReferenceError", "RemoteError", "StoreError", "ImageNotFoundError", "AuthError",
                "ArchiveError", "CredentialsError", "ManifestError", "SizeMismatchError", "ExtractError",
                "PlatformError", "ContentNotFound", "ContentSizeError", "ValueError", "FileNotFoundError",
                "PermissionError", "ResponseRefused", "LayerTooLarge"):
        from pyreg.client.cli import setting_of

        return f"{exc}{setting_of('', str(exc))}"
    if name.endswith(("ConnectError", "Timeout", "TransportError", "ReadError", "WriteError")):
        return f"network error: {exc}"
    return f"{name}: {exc}"
