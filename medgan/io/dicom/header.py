"""A small, fast DICOM header parser for the attributes a volume needs (no pydicom import).

Importing pydicom costs about 0.3 s of CPU (its pixel plugins load GDCM and more), and its general
``dcmread`` about 1.5 ms per file; for a 300-slice CT series that is more than the whole conversion
of dcm2niix. This parser walks the top-level data elements of a Part 10 file with :mod:`struct`,
decodes only the attributes listed in :data:`WANTED` (never patient attributes), skips everything
else (sequences included, nested or undefined length), and stops at PixelData, recording where its
value starts in the file. DICOMDIR/DIRFILE directory records are decoded too.

It covers uncompressed and encapsulated (compressed) transfer syntaxes in implicit/explicit VR,
little and big endian. Whatever it does not cover raises :class:`HeaderFallback`, and the caller
reads that file with pydicom instead: deflated transfer syntax, files without the ``DICM`` preamble,
enhanced multi-frame functional groups, character sets other than ASCII/Latin-1/UTF-8, and any value
it cannot decode. It never guesses.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

# Keyword and the VR used to decode the value when the file does not say (implicit VR or "UN").
WANTED: Dict[int, Tuple[str, str]] = {
    0x00020002: ("MediaStorageSOPClassUID", "UI"),
    0x00020010: ("TransferSyntaxUID", "UI"),
    0x00080005: ("SpecificCharacterSet", "CS"),
    0x00080008: ("ImageType", "CS"),
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080060: ("Modality", "CS"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x00180050: ("SliceThickness", "DS"),
    0x00181120: ("GantryDetectorTilt", "DS"),
    0x00181210: ("ConvolutionKernel", "SH"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200011: ("SeriesNumber", "IS"),
    0x00200013: ("InstanceNumber", "IS"),
    0x00200032: ("ImagePositionPatient", "DS"),
    0x00200037: ("ImageOrientationPatient", "DS"),
    0x00200052: ("FrameOfReferenceUID", "UI"),
    0x00280002: ("SamplesPerPixel", "US"),
    0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"),
    0x00280011: ("Columns", "US"),
    0x00280030: ("PixelSpacing", "DS"),
    0x00280100: ("BitsAllocated", "US"),
    0x00280101: ("BitsStored", "US"),
    0x00280103: ("PixelRepresentation", "US"),
    0x00281052: ("RescaleIntercept", "DS"),
    0x00281053: ("RescaleSlope", "DS"),
}
# Attributes of DICOMDIR directory records.
RECORD_WANTED: Dict[int, Tuple[str, str]] = {
    0x00041400: ("OffsetOfTheNextDirectoryRecord", "UL"),
    0x00041420: ("OffsetOfReferencedLowerLevelDirectoryEntity", "UL"),
    0x00041430: ("DirectoryRecordType", "CS"),
    0x00041500: ("ReferencedFileID", "CS"),
    0x00041511: ("ReferencedSOPInstanceUIDInFile", "UI"),
    0x00080060: ("Modality", "CS"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200011: ("SeriesNumber", "IS"),
}
DIRECTORY_RECORD_SEQUENCE = 0x00041220
PIXEL_DATA = 0x7FE00010
# Enhanced multi-frame: per-frame geometry lives in these sequences; pydicom reads them.
FUNCTIONAL_GROUPS = (0x52009229, 0x52009230)

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_MAX_DEPTH = 32
#: Bytes read first; most CT/MR headers (private tags included) end before this.
FIRST_READ_BYTES = 16384


class HeaderFallback(Exception):
    """This file needs the general (pydicom) parser; the message says why."""


class NotDicom(Exception):
    """The file is clearly not DICOM (no preamble and no plausible first element)."""


@dataclass
class Header:
    """The decoded attributes of one file, with a pydicom-like ``get``/attribute access.

    Attributes:
        values: keyword -> value (str, int, float, or a list of them for multi-valued attributes).
        file_meta: the decoded group 0002 attributes.
        pixel_offset: file offset of the PixelData value; None when the file has none.
        pixel_length: its declared length in bytes; None when undefined (encapsulated, compressed).
        file_size: bytes in the file.
        truncated: the file ends inside an element (``problem`` says which).
        records: DICOMDIR directory records (each a dict with ``_offset``: the item's file offset).
    """

    path: str
    values: Dict[str, Any]
    file_meta: Dict[str, Any]
    pixel_offset: Optional[int] = None
    pixel_length: Optional[int] = None
    file_size: int = 0
    truncated: bool = False
    problem: str = ""
    records: Optional[List[Dict[str, Any]]] = field(default=None, repr=False)

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.values.get(keyword, default)

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.values or (keyword == "PixelData" and self.pixel_offset is not None)

    def __getattr__(self, keyword: str) -> Any:
        values = self.__dict__.get("values", {})
        if keyword in values:
            return values[keyword]
        raise AttributeError(keyword)


class _NeedMore(Exception):
    """The header goes on past the bytes read so far."""


class _Parser:
    def __init__(self, buffer: bytes, file_size: int, charset: str = "latin-1") -> None:
        self.buf = buffer
        self.size = len(buffer)
        self.file_size = file_size
        self.charset = charset

    def need(self, end: int) -> None:
        """Make sure bytes up to ``end`` are at hand: EOFError past the file, _NeedMore past the buffer."""
        if end > self.size:
            raise _NeedMore() if self.size < self.file_size else EOFError(end)

    def element(self, pos: int, little: bool, explicit: bool) -> Tuple[int, bytes, int, int]:
        """``(tag, vr, length, value_pos)`` of the element at ``pos``."""
        self.need(pos + 8)
        group, elem = struct.unpack_from("<HH" if little else ">HH", self.buf, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:  # item and delimiters: no VR in any syntax
            return tag, b"", struct.unpack_from("<L" if little else ">L", self.buf, pos + 4)[0], pos + 8
        if not explicit:
            return tag, b"", struct.unpack_from("<L" if little else ">L", self.buf, pos + 4)[0], pos + 8
        vr = bytes(self.buf[pos + 4:pos + 6])
        if vr in _LONG_VRS:
            self.need(pos + 12)
            return tag, vr, struct.unpack_from("<L" if little else ">L", self.buf, pos + 8)[0], pos + 12
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise HeaderFallback(f"unexpected VR bytes {vr!r} at offset {pos}")
        return tag, vr, struct.unpack_from("<H" if little else ">H", self.buf, pos + 6)[0], pos + 8

    def skip_undefined(self, pos: int, little: bool, explicit: bool, depth: int = 0) -> int:
        """Position after an undefined-length sequence whose first item starts at ``pos``."""
        if depth > _MAX_DEPTH:
            raise HeaderFallback("sequences nested too deeply")
        while True:
            tag, _, length, value_pos = self.element(pos, little, explicit)
            if tag == _SEQUENCE_END:
                return value_pos
            if tag != _ITEM:
                raise HeaderFallback(f"expected a sequence item at offset {pos}")
            if length != _UNDEFINED:
                pos = value_pos + length
                continue
            pos = value_pos
            while True:  # the item's elements up to its delimiter
                tag, vr, length, value_pos = self.element(pos, little, explicit)
                if tag == _ITEM_END:
                    pos = value_pos
                    break
                if length == _UNDEFINED:
                    pos = self.skip_undefined(value_pos, *_content_syntax(vr, little, explicit), depth + 1)
                else:
                    pos = value_pos + length

    def decode(self, raw: bytes, vr: str, little: bool) -> Any:
        if vr in ("US", "UL", "SS", "SL"):
            code = {"US": "H", "UL": "L", "SS": "h", "SL": "l"}[vr]
            count = len(raw) // struct.calcsize(code)
            if count == 0:
                return None
            numbers = struct.unpack(("<" if little else ">") + code * count, raw[:count * struct.calcsize(code)])
            return numbers[0] if count == 1 else list(numbers)
        text = raw.decode(self.charset if vr in ("LO", "SH", "ST", "LT", "UT", "UC") else "ascii")
        text = text.rstrip("\x00 ")
        if vr in ("DS", "IS", "CS", "UI"):
            text = text.replace("\x00", "")
        parts = [p.strip() for p in text.split("\\")] if vr not in ("ST", "LT", "UT") else [text]
        if vr == "DS":
            values: List[Any] = [float(p) if p else None for p in parts]
        elif vr == "IS":
            values = [int(p) if p and p.lstrip("+-").isdigit() else _int_from_text(p) for p in parts]
        else:
            values = parts
        if len(values) == 1:
            return values[0] if values[0] != "" else ""
        return values

    def items(self, pos: int, end: Optional[int], little: bool, explicit: bool,
              wanted: Dict[int, Tuple[str, str]]) -> Tuple[List[Dict[str, Any]], int]:
        """Decode the items of a sequence (defined length: ``end``; undefined: up to its delimiter)."""
        found: List[Dict[str, Any]] = []
        while end is None or pos < end:
            tag, _, length, value_pos = self.element(pos, little, explicit)
            if tag == _SEQUENCE_END:
                return found, value_pos
            if tag != _ITEM:
                raise HeaderFallback(f"expected a sequence item at offset {pos}")
            item: Dict[str, Any] = {"_offset": pos}
            item_end = None if length == _UNDEFINED else value_pos + length
            pos = value_pos
            while item_end is None or pos < item_end:
                tag, vr, length, value_pos = self.element(pos, little, explicit)
                if tag == _ITEM_END:
                    pos = value_pos
                    break
                if length == _UNDEFINED:
                    pos = self.skip_undefined(value_pos, *_content_syntax(vr, little, explicit))
                    continue
                self.need(value_pos + length)
                if tag in wanted:
                    keyword, default_vr = wanted[tag]
                    use_vr = vr.decode() if vr and vr != b"UN" else default_vr
                    item[keyword] = self.decode(bytes(self.buf[value_pos:value_pos + length]), use_vr, little)
                pos = value_pos + length
            found.append(item)
        return found, pos


def _content_syntax(vr: bytes, little: bool, explicit: bool) -> Tuple[bool, bool]:
    """``(little, explicit)`` of an undefined-length value: "UN" content is implicit VR little endian."""
    return (True, False) if vr == b"UN" else (little, explicit)


def _int_from_text(text: str) -> Optional[int]:
    if not text:
        return None
    number = float(text)
    if number != int(number):
        raise ValueError(f"IS value {text!r} is not an integer")
    return int(number)


def parse_header(path: PathLike) -> Header:
    """Parse the header of one DICOM Part 10 file, up to PixelData.

    The first :data:`FIRST_READ_BYTES` are read (enough for most headers); a longer header is read
    again in larger pieces.

    Raises:
        NotDicom: the file has no DICOM preamble and does not start like a DICOM data set.
        HeaderFallback: the file needs the general parser (see the module docstring).
        OSError: the file cannot be opened or read.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise NotDicom("empty file")
        chunk = FIRST_READ_BYTES
        while True:
            handle.seek(0)
            buffer = handle.read(min(size, chunk))
            try:
                header = _parse(buffer, path, size)
            except _NeedMore:
                chunk *= 8
                continue
            if header.pixel_offset is not None and header.pixel_length is None and not header.truncated:
                _check_encapsulated(handle, header, size)
            return header




def _check_encapsulated(handle: Any, header: Header, size: int) -> None:
    """Walk the items of encapsulated (compressed) pixel data and mark a file cut short.

    Only the 8-byte item headers are read (a seek over each fragment), so this costs one small
    read per fragment. A compressed slice whose last fragment or sequence delimiter is missing is
    marked ``truncated`` instead of being listed as usable.
    """
    pos = int(header.pixel_offset)
    while True:
        handle.seek(pos)
        raw = handle.read(8)
        if len(raw) < 8:
            break
        group, element, length = struct.unpack("<HHI", raw)
        tag = (group << 16) | element
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM or pos + 8 + length > size:
            break
        pos += 8 + length
    header.truncated = True
    header.problem = "the file is truncated: its compressed pixel data is cut short (no sequence delimiter)"


def _parse(buffer: bytes, path: str, size: int) -> Header:
    if size < 132 or buffer[128:132] != b"DICM":
        if buffer[:2] in (b"\x08\x00", b"\x02\x00", b"\x00\x08", b"\x00\x02"):
            raise HeaderFallback("no DICOM preamble")
        raise NotDicom("no DICOM preamble")
    parser = _Parser(buffer, size)
    header = Header(path=path, values={}, file_meta={}, file_size=size)
    pos = 132
    try:
        while pos + 8 <= size:
            parser.need(pos + 8)
            if struct.unpack_from("<H", buffer, pos)[0] != 0x0002:
                break
            tag, vr, length, value_pos = parser.element(pos, True, True)
            if length == _UNDEFINED:
                raise HeaderFallback("undefined length in the file meta information")
            parser.need(value_pos + length)
            if tag in WANTED:
                keyword, default_vr = WANTED[tag]
                header.file_meta[keyword] = parser.decode(buffer[value_pos:value_pos + length], default_vr, True)
            pos = value_pos + length
    except EOFError:
        pos = size
    if pos + 8 > size:
        header.truncated, header.problem = True, "the file is truncated: it ends inside its file meta information"
        return header
    syntax = str(header.file_meta.get("TransferSyntaxUID", ""))
    if not syntax or syntax == DEFLATED:
        raise HeaderFallback(f"transfer syntax {syntax or '(none)'}")
    little, explicit = syntax != EXPLICIT_VR_BE, syntax != IMPLICIT_VR_LE
    values = header.values
    try:
        while pos < size:
            tag, vr, length, value_pos = parser.element(pos, little, explicit)
            if tag == PIXEL_DATA:
                header.pixel_offset = value_pos
                header.pixel_length = None if length == _UNDEFINED else length
                if length != _UNDEFINED and value_pos + length > size:
                    header.truncated = True
                    header.problem = (f"the file is truncated: the pixel data is cut short ({size - value_pos} of "
                                      f"its {length} bytes are in the file)")
                break
            if tag in FUNCTIONAL_GROUPS:
                raise HeaderFallback("enhanced multi-frame functional groups")
            if tag == DIRECTORY_RECORD_SEQUENCE:
                end = None if length == _UNDEFINED else value_pos + length
                header.records, pos = parser.items(value_pos, end, little, explicit, RECORD_WANTED)
                continue
            if length == _UNDEFINED:
                pos = parser.skip_undefined(value_pos, *_content_syntax(vr, little, explicit))
                continue
            if tag in WANTED:
                parser.need(value_pos + length)
                keyword, default_vr = WANTED[tag]
                use_vr = vr.decode() if vr and vr != b"UN" else default_vr
                values[keyword] = parser.decode(buffer[value_pos:value_pos + length], use_vr, little)
                if keyword == "SpecificCharacterSet":
                    charset = values[keyword] if isinstance(values[keyword], str) else "\\".join(values[keyword])
                    if charset not in _CHARSETS:
                        raise HeaderFallback(f"character set {charset}")
                    parser.charset = _CHARSETS[charset]
            elif value_pos + length > size:
                raise EOFError(pos)
            pos = value_pos + length
    except EOFError:
        header.truncated = True
        header.problem = "the file is truncated: it ends inside its header"
    except (UnicodeDecodeError, ValueError, struct.error) as err:
        raise HeaderFallback(f"cannot decode a value ({err})") from None
    return header


def iter_records(header: Header) -> Iterator[Dict[str, Any]]:
    """The DICOMDIR records of ``header``, each with ``_parent`` (the record above it, or None).

    The hierarchy comes from the records' lower-level and next-record offsets; records that no
    offset reaches (files written without offsets) inherit the last SERIES/STUDY record before them.
    """
    records = header.records or []
    by_offset = {record["_offset"]: record for record in records}
    parents: Dict[int, Optional[Dict[str, Any]]] = {}
    for record in records:
        child = by_offset.get(record.get("OffsetOfReferencedLowerLevelDirectoryEntity") or -1)
        seen = set()
        while child is not None and id(child) not in seen:
            seen.add(id(child))
            parents[id(child)] = record
            child = by_offset.get(child.get("OffsetOfTheNextDirectoryRecord") or -1)
    last_series: Optional[Dict[str, Any]] = None
    for record in records:
        kind = str(record.get("DirectoryRecordType", "")).upper()
        parent = parents.get(id(record), last_series if kind not in ("PATIENT", "STUDY", "SERIES") else None)
        if kind == "SERIES":
            last_series = record
        yield {**record, "_parent": parent}
