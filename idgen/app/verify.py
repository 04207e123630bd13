"""`idgen verify FILE`: does an image or video carry idgen provenance (metadata, watermark)?

Exit codes: 0 provenance found (metadata or watermark); 5 none found; 3 the file is missing,
unreadable or corrupt (the CLI's bad-input code).
"""

from __future__ import annotations

import argparse
import json

EXIT_FOUND, EXIT_NONE_FOUND = 0, 5


def _source_type(uri: str) -> str:
    return uri.rsplit("/", 1)[-1] if uri else "unknown"


def format_report(report: dict) -> str:
    """A few human lines for a `verify_file` report."""
    width, height = report["size"]
    frames = f", {report['num_frames']} frames" if report["kind"] == "video" else ""
    lines = [f"{report['file']}: {report['kind']} {width}x{height}{frames}"]
    meta = report["metadata"]
    manifest = meta.get("manifest")
    if not meta["found"]:
        lines.append("metadata: none")
    elif manifest:
        state = "intact" if meta["manifest_intact"] else "EDITED after writing (its id no longer matches its fields)"
        lines.append(f"metadata: idgen manifest {manifest.get('id')} ({state}) in {meta['container']}")
        lines.append(f"  {meta['label']} [{_source_type(meta['digital_source_type'])}], created {manifest.get('created')}")
        lines.append(f"  face swap: {'yes' if manifest.get('face_swap') else 'no'}")
    else:
        problem = f" (manifest unreadable: {meta['manifest_error']})" if meta.get("manifest_error") else ""
        lines.append(f"metadata: {meta.get('label') or 'XMP'} [{_source_type(meta.get('digital_source_type'))}]"
                     f" in {meta['container']}{problem}")
    mark = report["watermark"]
    stats = f"{mark['bit_accuracy']:.0%} of magic bits, p = {mark['p_value']:.1e}"
    if mark["detected"]:
        match = {True: ", matches the manifest", False: ", does NOT match the manifest", None: ""}[mark["id_matches_manifest"]]
        lines.append(f"watermark: detected, id {mark['payload_id']}{match} ({stats})")
    else:
        lines.append(f"watermark: not detected ({stats})")
    lines.append("provenance: found" if report["provenance_found"] else "provenance: none found")
    return "\n".join(lines)


def _cmd_verify(args: argparse.Namespace) -> int:
    from idgen.provenance import verify_file

    report = verify_file(args.file)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else format_report(report))
    return EXIT_FOUND if report["provenance_found"] else EXIT_NONE_FOUND


def add_parser(sub) -> None:
    """Register `idgen verify` on the CLI's subparsers."""
    verify = sub.add_parser("verify", help="check an image or video for idgen provenance: metadata and watermark",
                            description=__doc__.splitlines()[0])
    verify.add_argument("file", help="image (png, jpg, webp, ...) or video (mp4, mov, mkv, webm, avi)")
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.set_defaults(func=_cmd_verify)
