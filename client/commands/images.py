"""pyreg images: list the local store. Kept import-light (no httpx, no rich): it must start fast."""

from __future__ import annotations

import argparse
from typing import Any

from client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="image IDs only")
    parser.add_argument("--digests", action="store_true", help="show manifest digests")
    parser.add_argument("--format", help="Go template per image ({{.Repository}} {{.Tag}} {{.ID}} "
                        "{{.Digest}} {{.CreatedAt}} {{.Size}}, {{json .}}, 'table …' for a header)")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
            "CreatedAt": "CREATED AT", "CreatedSince": "CREATED", "Size": "SIZE"}


def _fields(r: dict[str, Any]) -> dict[str, Any]:
    """What ``images --format`` sees: docker's field names."""
    return {"Repository": r["repository"], "Tag": r["tag"], "ID": str(r["id"]).split(":")[-1][:12],
            "Digest": r["digest"], "CreatedAt": r["created"], "CreatedSince": r["created"],
            "Size": _size(int(r["size"])), "Containers": "N/A"}


def _run(args: argparse.Namespace) -> int:
    from storage import mediatypes

    store = common.store(create=False)
    rows = []
    for record in store.images() if store is not None else []:
        name, tag = record.name, "<none>"
        if "@" in name:
            name = name.split("@")[0]
        elif ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        created, size, image_id = "", 0, str(record.digest)
        try:
            if record.media_type in mediatypes.IMAGE_MANIFESTS:
                manifest = store.read_manifest(record.digest, record.media_type)
                size = sum(d.size for d in manifest.blobs)
                if manifest.config is not None:
                    image_id = str(manifest.config.digest)
                    created = str(store.read_json(image_id).get("created") or "")
        except Exception as exc:
            created = f"<unreadable: {exc}>"
        rows.append({"repository": name, "tag": tag, "id": image_id, "digest": str(record.digest),
                     "created": created, "size": size, "name": record.name})
    if args.json:
        common.emit(args, rows)
        return 0
    if args.format:
        return common.print_format(args.format, [_fields(r) for r in rows], _HEADERS)
    if args.quiet:
        for row in rows:
            print(row["id"].split(":")[1][:12])
        return 0
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table = [header] + [
        [r["repository"], r["tag"]] + ([r["digest"]] if args.digests else [])
        + [r["id"].split(":")[1][:12], r["created"][:19].replace("T", " "), _size(r["size"])] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
