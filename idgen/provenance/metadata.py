"""Provenance in the image file: an XMP packet (IPTC DigitalSourceType, creator tool, the
manifest) in PNG, JPEG and WebP, plus the manifest JSON as a PNG text chunk.

Why not a signed C2PA manifest (c2pa-python): it signs offline only with a certificate and
private key. A key shipped with idgen would let anyone sign anything as idgen, a self-made
certificate is reported as `signingCredential.untrusted` by every C2PA validator, and a trusted
one must be bought per deployment. So idgen writes the same facts unsigned, in the places readers
of AI labels look (IPTC DigitalSourceType in XMP, which is also what C2PA's actions carry); a
deployment with its own certificate can add a signed C2PA manifest on top with c2patool.

Where things go:
    PNG:  iTXt `XML:com.adobe.xmp` (the XMP packet) and iTXt `idgen:provenance` (manifest JSON).
    JPEG: XMP in an APP1 segment (Pillow's `xmp=`; at most `JPEG_MAX_XMP` bytes).
    WebP: XMP in the `XMP ` chunk (Pillow's `xmp=`).
The XMP packet holds the manifest JSON too (`idgen:Manifest`), so every format carries all of it.
    MP4:  container metadata `description` (manifest JSON) and `comment` (the one-line label):
          the two free-text keys FFmpeg's MP4 muxer writes (as udta atoms) and reads back.
"""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Union
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from idgen.errors import ImageReadError
from idgen.image_io import MAX_IMAGE_BYTES
from idgen.provenance.manifest import Provenance, ProvenanceError
from idgen.provenance.watermark import check_rgb, embed

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
#: The PNG text chunk that holds the manifest JSON.
PNG_MANIFEST_KEY = "idgen:provenance"
PNG_XMP_KEY = "XML:com.adobe.xmp"
#: Most XMP bytes one JPEG APP1 segment holds (65535 - 2 length bytes - 29 namespace bytes).
JPEG_MAX_XMP = 65504
#: XMP namespaces.
NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "idgen": "urn:idgen:provenance:1.0/",
}
#: MP4 container metadata keys (`av.open(path).metadata`).
VIDEO_MANIFEST_KEY = "description"
VIDEO_LABEL_KEY = "comment"
#: XMP packets larger than this are not parsed (bytes).
MAX_XMP_BYTES = 1 << 20


def xmp_packet(provenance: Provenance) -> bytes:
    """The XMP packet (UTF-8) for `provenance`: Iptc4xmpExt:DigitalSourceType, xmp:CreatorTool,
    xmp:CreateDate, dc:description ("AI-generated with idgen ..."), idgen:ManifestId and
    idgen:Manifest (the manifest JSON)."""
    namespaces = " ".join(f"xmlns:{k}={quoteattr(v)}" for k, v in NS.items() if k not in ("x", "rdf"))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="{NS["x"]}">\n'
        f' <rdf:RDF xmlns:rdf="{NS["rdf"]}">\n'
        f'  <rdf:Description rdf:about="" {namespaces}\n'
        f'    Iptc4xmpExt:DigitalSourceType={quoteattr(provenance.digital_source_type)}\n'
        f'    xmp:CreatorTool={quoteattr(provenance.generator)}\n'
        f'    xmp:CreateDate={quoteattr(provenance.created)}\n'
        f'    idgen:ManifestId={quoteattr(provenance.id)}>\n'
        '   <dc:description><rdf:Alt>'
        f'<rdf:li xml:lang="x-default">{escape(provenance.description)}</rdf:li></rdf:Alt></dc:description>\n'
        f'   <idgen:Manifest>{escape(provenance.to_json())}</idgen:Manifest>\n'
        '  </rdf:Description>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="w"?>'
    ).encode("utf-8")


def encode_image(image: np.ndarray, fmt: str, provenance: Provenance, *, watermark: bool = True,
                 quality: int = 95) -> bytes:
    """Encode an RGB uint8 image `[H, W, 3]` as `fmt` ("png", "jpeg"/"jpg", "webp"; the caller
    takes it from the file suffix) with the provenance metadata, watermarked first with the
    manifest id unless `watermark=False` (for images already `stamp`ed; stamping twice is
    harmless). `quality`: JPEG/WebP quality 1-100 (PNG is lossless).

    Raises:
        ProvenanceError: unknown format, or a manifest too large for JPEG's XMP segment.
    """
    container = FORMATS.get(fmt.lower().lstrip("."))
    if container is None:
        raise ProvenanceError(f"cannot write provenance into {fmt!r} images; use one of {', '.join(sorted(FORMATS))}.")
    if not 1 <= quality <= 100:
        raise ProvenanceError(f"quality must be in [1, 100], got {quality}.")
    pixels = embed(image, provenance.id) if watermark else check_rgb(image)
    pil = Image.fromarray(pixels)
    xmp = xmp_packet(provenance)
    buffer = io.BytesIO()
    if container == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(PNG_XMP_KEY, xmp.decode("utf-8"))
        info.add_itxt(PNG_MANIFEST_KEY, provenance.to_json())
        pil.save(buffer, "PNG", pnginfo=info)
    elif container == "JPEG":
        if len(xmp) > JPEG_MAX_XMP:
            raise ProvenanceError(f"the provenance manifest is {len(xmp)} bytes of XMP, more than a JPEG holds "
                                  f"({JPEG_MAX_XMP}); save as PNG, or record fewer parameters.")
        pil.save(buffer, "JPEG", quality=quality, xmp=xmp)
    else:
        pil.save(buffer, "WEBP", quality=quality, xmp=xmp)
    return buffer.getvalue()


def video_metadata(provenance: Provenance) -> dict[str, str]:
    """The MP4 container metadata for `provenance`: the manifest JSON and a one-line label with
    the IPTC digital source type and the manifest id."""
    label = f"{provenance.description}; IPTC digitalSourceType {provenance.digital_source_type}; manifest {provenance.id}"
    return {VIDEO_MANIFEST_KEY: provenance.to_json(), VIDEO_LABEL_KEY: label}


def _parse_manifest(manifest_json: str) -> tuple[Optional[dict], Optional[bool], Optional[str]]:
    """(manifest dict as written, whether its id still hashes its fields, parse error)."""
    try:
        provenance = Provenance.from_json(manifest_json)
    except ProvenanceError as e:
        return None, None, str(e)
    manifest = json.loads(manifest_json)
    return manifest, manifest.get("id") == provenance.id, None


def read_video_metadata(container_metadata: dict) -> Optional[dict]:
    """Provenance in a video's container metadata (`av.open(path).metadata`): `{"container":
    "MP4", "label": the comment, "manifest", "manifest_intact", "manifest_error"}` as
    `read_metadata`; None when the file carries no idgen manifest."""
    manifest_json = container_metadata.get(VIDEO_MANIFEST_KEY)
    if not manifest_json or '"schema"' not in manifest_json:
        return None
    manifest, intact, error = _parse_manifest(manifest_json)
    return {"container": "MP4", "label": container_metadata.get(VIDEO_LABEL_KEY), "manifest": manifest,
            "manifest_intact": intact, "manifest_error": error}


def parse_xmp(xmp: Union[bytes, str]) -> Optional[dict]:
    """The provenance fields of an XMP packet: `digital_source_type`, `creator_tool`,
    `created`, `description`, `manifest_id`, `manifest_json` (each None when absent). None when
    the packet is not XML or too large."""
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if len(xmp) > MAX_XMP_BYTES:
        return None
    # expat: no external entities are fetched; a DOCTYPE (entity expansion) is refused outright.
    if b"<!DOCTYPE" in xmp or b"<!ENTITY" in xmp:
        return None
    try:
        root = ET.fromstring(xmp.strip(b"\x00").strip())
    except ET.ParseError:
        return None
    fields = {"digital_source_type": None, "creator_tool": None, "created": None, "description": None,
              "manifest_id": None, "manifest_json": None}
    attributes = {"digital_source_type": ("Iptc4xmpExt", "DigitalSourceType"), "creator_tool": ("xmp", "CreatorTool"),
                  "created": ("xmp", "CreateDate"), "manifest_id": ("idgen", "ManifestId"),
                  "manifest_json": ("idgen", "Manifest")}
    for description in root.iter(f"{{{NS['rdf']}}}Description"):
        for name, (prefix, local) in attributes.items():
            tag = f"{{{NS[prefix]}}}{local}"
            value = description.get(tag)
            if value is None:
                element = description.find(tag)
                value = element.text if element is not None else None
            if value is not None and fields[name] is None:
                fields[name] = value
        li = description.find(f"{{{NS['dc']}}}description/{{{NS['rdf']}}}Alt/{{{NS['rdf']}}}li")
        if li is not None and fields["description"] is None:
            fields["description"] = li.text
    return fields


def _synthetic(digital_source_type: Optional[str]) -> bool:
    """Whether an IPTC digital source type says algorithmic (AI) media, pure or composite."""
    return bool(digital_source_type) and "algorithmicmedia" in digital_source_type.lower()


def _open(source: Union[str, os.PathLike, bytes]) -> Image.Image:
    what = "image"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        what = f"image file {str(path)!r}"
        if not path.is_file():
            raise ImageReadError(f"{what} does not exist or is not a file.")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageReadError(f"{what} is over {MAX_IMAGE_BYTES} bytes; raise IDGEN_MAX_IMAGE_BYTES to read it.")
        source = path.read_bytes()
    try:
        return Image.open(io.BytesIO(source))
    except UnidentifiedImageError:
        raise ImageReadError(f"{what} is not an image Pillow can read (corrupt, or not an image); check the file.") from None
    except (OSError, ValueError) as e:
        raise ImageReadError(f"{what} could not be decoded as an image ({e}).") from None


def read_metadata(source: Union[str, os.PathLike, bytes]) -> Optional[dict]:
    """Provenance metadata of an image file (path or bytes): an idgen manifest, or XMP that labels
    the image as AI media (IPTC DigitalSourceType *algorithmicMedia, as other tools write it).
    None when it carries neither (XMP about anything else is not provenance here).

    Returns `{"container": "PNG"|"JPEG"|"WEBP"|..., "xmp": parse_xmp fields or None,
    "manifest": the manifest dict as written, or None, "manifest_intact": whether its `id` is
    still the hash of its fields (False: edited after writing), "manifest_error": why a manifest
    found could not be parsed, or None}`. The PNG text chunk is preferred to the XMP copy.

    Raises:
        ImageReadError: missing file, or not an image.
    """
    pil = _open(source)
    xmp_raw = pil.info.get("xmp")
    xmp = parse_xmp(xmp_raw) if xmp_raw else None
    if xmp is not None and not (xmp["manifest_id"] or xmp["manifest_json"] or _synthetic(xmp["digital_source_type"])):
        xmp = None  # XMP of a camera or editor, with no AI provenance in it
    manifest_json = pil.info.get(PNG_MANIFEST_KEY) or (xmp or {}).get("manifest_json")
    if xmp is None and manifest_json is None:
        return None
    manifest, intact, error = _parse_manifest(manifest_json) if manifest_json is not None else (None, None, None)
    return {"container": pil.format, "xmp": xmp, "manifest": manifest, "manifest_intact": intact,
            "manifest_error": error}
