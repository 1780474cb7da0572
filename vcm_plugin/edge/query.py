"""What a request asks, parsed strictly: query parameters (one spelling per value, bounds
checked) and the detections document a worker stores. Every refusal is a VCMError (the
service answers 400 with its message)."""

from __future__ import annotations

import math
import re

from aiohttp import web

from vcm_plugin.edge.index import Cursor, EventCursor
from vcm_plugin.errors import VCMError

_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
#: what an ``X-VCM-Client`` label may be (the open principal's name without tokens)
CLIENT_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")


def int_param(
    request: web.Request,
    name: str,
    default: int | None = None,
    lo: int | None = None,
    hi: int | None = None,
) -> int | None:
    """An integer query parameter: ASCII digits, one spelling (no '+', '_', spaces, leading
    zeros or other scripts' digits), within [lo, hi]; else VCMError (400)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _INT.fullmatch(raw):
        raise VCMError(
            f"query parameter {name}={raw[:40]!r} is not an integer (ASCII digits, "
            "no leading zeros)"
        )
    value = int(raw)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise VCMError(f"query parameter {name}={value} out of range [{lo}, {hi}]")
    return value


def float_param(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    """A finite decimal query parameter within [lo, hi] ('nan', 'inf', '1e9' refused)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _DECIMAL.fullmatch(raw):
        raise VCMError(f"query parameter {name}={raw[:40]!r} is not a plain decimal number")
    value = float(raw)
    if not lo <= value <= hi:
        raise VCMError(f"query parameter {name}={raw} out of range [{lo:g}, {hi:g}]")
    return value


def class_param(request: web.Request) -> str | None:
    """``class=NAME``: a detector's class name (printable, at most 256 characters)."""
    raw = request.query.get("class")
    if raw is None or raw == "":
        return None
    if len(raw) > 256 or not raw.isprintable():
        raise VCMError("query parameter class must be a printable name of at most 256 characters")
    return raw


def score_param(request: web.Request) -> float | None:
    raw = request.query.get("min_score")
    return None if raw in (None, "") else float_param(request, "min_score", 0.0, 0.0, 1e6)


def cursor_param(request: web.Request) -> Cursor | None:
    raw = request.query.get("cursor")
    return None if raw in (None, "") else Cursor.decode(raw)


def event_cursor_param(request: web.Request) -> EventCursor | None:
    raw = request.query.get("cursor")
    return None if raw in (None, "") else EventCursor.decode(raw)


def newest_first_param(request: web.Request) -> bool:
    """``order=desc`` (the default: newest capture time first) or ``order=asc``."""
    raw = request.query.get("order")
    if raw in (None, "", "desc"):
        return True
    if raw == "asc":
        return False
    raise VCMError(f"query parameter order={raw[:40]!r}: 'desc' (newest first) or 'asc'")


def flag_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw in (None, "", "0"):
        return False
    if raw == "1":
        return True
    raise VCMError(f"query parameter {name}={raw[:40]!r} must be 0 or 1")


def check_detections(doc: object, max_boxes: int) -> dict:
    """The detections document a worker may store: an object of scalars plus ``boxes``, a
    list of objects each with ``xyxy`` (4 finite numbers); every number finite (NaN never
    stored), strings short, nothing nested deeper. Raises VCMError saying what is wrong."""

    def text(value: str, where: str) -> None:
        if len(value) > 256:
            raise VCMError(f"detections: {where} is longer than 256 characters")
        try:  # JSON's \ud800 escapes decode to lone surrogates, which no index can store
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise VCMError(f"detections: {where} is not valid Unicode (a lone surrogate)") from None

    def scalar(value: object, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise VCMError(f"detections: {where} is not a finite number")
        if isinstance(value, str):
            text(value, where)
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise VCMError(f"detections: {where} must be a string, number, boolean or null")

    def number(value: object) -> bool:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )

    if not isinstance(doc, dict) or not isinstance(doc.get("boxes"), list):
        raise VCMError('detections must be a JSON object with a "boxes" list')
    if len(doc) > 64:
        raise VCMError("detections: more than 64 fields")
    boxes = doc["boxes"]
    if len(boxes) > max_boxes:
        raise VCMError(f"detections: {len(boxes)} boxes, over the limit of {max_boxes}")
    for name, value in doc.items():
        text(name, f"field name {name[:40]!r}")
        if name != "boxes":
            scalar(value, repr(name[:40]))
    for i, box in enumerate(boxes):
        if not isinstance(box, dict) or len(box) > 16:
            raise VCMError(f"detections: box {i} must be an object of at most 16 fields")
        xyxy = box.get("xyxy")
        if not (isinstance(xyxy, list) and len(xyxy) == 4 and all(number(v) for v in xyxy)):
            raise VCMError(f"detections: box {i} needs xyxy, four finite numbers")
        for name, value in box.items():
            text(name, f"box {i} field name {name[:40]!r}")
            if name != "xyxy":
                scalar(value, f"box {i} {name[:40]!r}")
        for name in ("conf", "score"):  # min_score filters on them: a number or nothing
            if box.get(name) is not None and not number(box[name]):
                raise VCMError(f"detections: box {i} {name} must be a finite number or null")
    inference = doc.get("inference_s")
    if inference is not None and (not isinstance(inference, (int, float)) or inference < 0):
        raise VCMError("detections: inference_s must be a number of seconds >= 0")
    return doc


#: the longest integer literal a detections document may hold (a 64-bit value has 20 digits);
#: Python refuses to parse over 4300 digits with a ValueError that is no client's business
MAX_INT_DIGITS = 20


def bounded_int(literal: str) -> int:
    """``json.loads``'s ``parse_int``: integer literals of at most ``MAX_INT_DIGITS`` digits."""
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise VCMError(
            f"JSON body: an integer of {len(literal.lstrip('-'))} digits (at most {MAX_INT_DIGITS})"
        )
    return int(literal)


def reject_constant(name: str) -> None:
    raise VCMError(f"JSON body: {name} is not a number JSON allows")
