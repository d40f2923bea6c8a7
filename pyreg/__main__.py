"""``python -m pyreg`` is the ``pyreg`` command."""

from pyreg.client.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
