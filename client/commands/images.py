"""pyreg images: list the local store. Kept import-light (no httpx, no rich): it must start fast.

As docker: newest first, CREATED relative (``2 hours ago``), sizes in docker's units (``7.55MB``),
``--filter reference=/dangling=/before=/since=/label=``, ``--digests``, ``--no-trunc``, ``-a``."""

from __future__ import annotations

import argparse
import calendar
import re
import time
from typing import Any

from pyreg.client import common

_FILTER_KEYS = ("reference", "dangling", "before", "since", "label")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]",
                        help="only images of this repository (a glob, as --filter reference=)")
    parser.add_argument("-a", "--all", action="store_true",
                        help="also intermediate images (pyreg's store keeps none: the same list, as docker "
                        "shows on a store without build parents)")
    parser.add_argument("-q", "--quiet", action="store_true", help="image IDs only")
    parser.add_argument("--digests", action="store_true", help="show manifest digests")
    parser.add_argument("--no-trunc", action="store_true", help="full image IDs (sha256:…)")
    parser.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="reference=GLOB, dangling=true|false, before=IMAGE, since=IMAGE, "
                        "label=KEY[=VALUE]; the same key twice: either, different keys: both")
    parser.add_argument("--format", help="Go template per image ({{.Repository}} {{.Tag}} {{.ID}} "
                        "{{.Digest}} {{.CreatedAt}} {{.CreatedSince}} {{.Size}}, {{json .}}, "
                        "'table …' for a header)")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
            "CreatedAt": "CREATED AT", "CreatedSince": "CREATED", "Size": "SIZE"}


def _epoch(created: str) -> float | None:
    """An image config's RFC 3339 ``created`` as seconds since the epoch (None when absent)."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", created.strip())
    if not m:
        return None
    t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float(m.group(2) or 0)
    zone = m.group(3) or "Z"
    if zone != "Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        t -= offset if zone[0] == "+" else -offset
    return t


def _since(created: str) -> str:
    """docker's CREATED column: ``2 hours ago``; ``N/A`` when the config has no date."""
    from pyreg.storage.units import human_duration

    t = _epoch(created)
    return "N/A" if t is None else f"{human_duration(max(0.0, time.time() - t))} ago"


def _id(r: dict[str, Any], no_trunc: bool) -> str:
    return str(r["id"]) if no_trunc else str(r["id"]).split(":")[-1][:12]


def _fields(r: dict[str, Any], no_trunc: bool = False) -> dict[str, Any]:
    """What ``images --format`` sees: docker's field names."""
    from pyreg.storage.units import human_size

    return {"Repository": r["repository"], "Tag": r["tag"], "ID": _id(r, no_trunc),
            "Digest": r["digest"], "CreatedAt": r["created"], "CreatedSince": _since(r["created"]),
            "Size": human_size(int(r["size"])), "Containers": "N/A"}


def _parse_filters(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in _FILTER_KEYS:
            raise ValueError(f"invalid filter {item!r} (use reference=, dangling=, before=, since=, label=)")
        if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"invalid filter 'dangling={value}': true or false")
        out.setdefault(key, []).append(value)
    return out


def _names(r: dict[str, Any]) -> list[str]:
    """What a reference pattern is matched against: the name as stored, without its registry,
    and without ``library/`` (``busybox`` for ``host/library/busybox``), each with and without
    the tag."""
    repo = r["repository"]
    forms = [repo]
    if "/" in repo and ("." in repo.split("/")[0] or ":" in repo.split("/")[0]):
        forms.append(repo.split("/", 1)[1])
    forms += [f[len("library/"):] for f in forms if f.startswith("library/")]
    tagged = [f"{f}:{r['tag']}" for f in forms] if r["tag"] != "<none>" else []
    return forms + tagged


def _glob(pattern: str, text: str) -> bool:
    """Go's ``path.Match`` for ``*`` and ``?``: neither matches ``/``."""
    rx = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text) is not None


def _lookup(rows: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """The image ``before=``/``since=`` name: by ID prefix or by name."""
    short = ref.removeprefix("sha256:")
    for r in rows:
        if len(short) >= 4 and str(r["id"]).split(":")[-1].startswith(short):
            return r
        names = [*_names(r), r["name"]]
        if ref in names or f"{ref}:latest" in names:
            return r
    raise ValueError(f"no such image: {ref}")


def _select(rows: list[dict[str, Any]], filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    def created(r: dict[str, Any]) -> float:
        t = _epoch(r["created"])
        return t if t is not None else 0.0

    bounds = {k: [created(_lookup(rows, v)) for v in vs] for k, vs in filters.items()
              if k in ("before", "since")}
    out = []
    for r in rows:
        if "reference" in filters and not any(_glob(p, n) for p in filters["reference"] for n in _names(r)):
            continue
        if "dangling" in filters:
            want = {v.lower() in ("true", "1") for v in filters["dangling"]}
            if (r["tag"] == "<none>") not in want:
                continue
        if "before" in bounds and not any(created(r) < b for b in bounds["before"]):
            continue
        if "since" in bounds and not any(created(r) > b for b in bounds["since"]):
            continue
        if "label" in filters:
            labels = r["labels"]
            if not any((k in labels and (not eq or labels[k] == v))
                       for k, eq, v in (f.partition("=") for f in filters["label"])):
                continue
        out.append(r)
    return out


def _run(args: argparse.Namespace) -> int:
    from pyreg.storage import mediatypes
    from pyreg.storage.units import human_size

    filters = _parse_filters(args.filter)
    if args.repository:
        filters.setdefault("reference", []).append(args.repository)
    store = common.store(create=False)
    rows = []
    for record in store.images() if store is not None else []:
        name, tag = record.name, "<none>"
        if record.dangling:
            name = "<none>"
        elif "@" in name:
            name = name.split("@")[0]
        elif ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        created, size, image_id, labels = "", 0, str(record.digest), {}
        try:
            if record.media_type in mediatypes.IMAGE_MANIFESTS:
                manifest = store.read_manifest(record.digest, record.media_type)
                size = sum(d.size for d in manifest.blobs)
                if manifest.config is not None:
                    image_id = str(manifest.config.digest)
                    config = store.read_json(image_id)
                    created = str(config.get("created") or "")
                    labels = dict((config.get("config") or {}).get("Labels") or {})
        except Exception as exc:
            created = f"<unreadable: {exc}>"
        rows.append({"repository": name, "tag": tag, "id": image_id, "digest": str(record.digest),
                     "created": created, "size": size, "name": record.name, "labels": labels})
    rows.sort(key=lambda r: _epoch(r["created"]) or 0.0, reverse=True)  # newest first, as docker
    rows = _select(rows, filters)
    if args.json:
        common.emit(args, [{k: v for k, v in r.items() if k != "labels"} for r in rows])
        return 0
    if args.format:
        return common.print_format(args.format, [_fields(r, args.no_trunc) for r in rows], _HEADERS)
    if args.quiet:
        seen: set[str] = set()
        for row in rows:  # as docker: each image once
            if (ident := _id(row, args.no_trunc)) not in seen:
                seen.add(ident)
                print(ident)
        return 0
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table = [header] + [
        [r["repository"], r["tag"]] + ([r["digest"]] if args.digests else [])
        + [_id(r, args.no_trunc), _since(r["created"]), human_size(r["size"])] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
