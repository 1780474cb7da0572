"""Events: per-camera rules over the worker's detections, and masks that drop detections.

A rule (Frigate's "object in a zone" review item) names the classes it watches, a minimum
score, a zone polygon and how many consecutive frames make an event; an event starts when
that many frames in a row hold a matching box, stays open while matches keep coming, and
ends once ``post_s`` seconds of capture time pass without one. After an event ends the rule
waits ``cooldown_s`` before it can start another, so one person lingering at a door is one
event, not one per frame. A box is in a zone when its bottom centre is (where an object
stands; Frigate uses the same point). ``pre_s``/``post_s`` also name the frames around the
event whose full-quality layers the server asks the camera for (the camera keeps them).

Masks (polygons per camera) drop boxes whose bottom centre lies in them before anything is
stored: a tree that sways or a road outside the fence never becomes a detection.

Files (JSON, or YAML when the name ends in .yml/.yaml), coordinates 0..1 of the picture::

    rules: {"door": [{"name": "person-at-door", "classes": ["person"], "min_score": 0.5,
                      "zone": [[0, 0.4], [1, 0.4], [1, 1], [0, 1]], "min_frames": 2,
                      "cooldown_s": 30, "pre_s": 5, "post_s": 5}]}
    masks: {"door": [[[0, 0], [0.3, 0], [0.3, 0.2], [0, 0.2]]]}

The camera key ``*`` applies to every camera without its own entry.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcm_plugin.edge.store import check_camera
from vcm_plugin.errors import VCMError

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
ANY_CAMERA = "*"
Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Rule:
    """One camera's rule; see the module docstring for what each field does."""

    name: str
    classes: frozenset[str]
    min_score: float = 0.5
    zone: Polygon | None = None
    min_frames: int = 1
    cooldown_s: float = 30.0
    pre_s: float = 5.0
    post_s: float = 5.0


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VCMError(f"{what} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise VCMError(f"{what} must be in {lo}..{hi}, got {value}")
    return float(value)


def _polygon(value: Any, what: str) -> Polygon:
    if not isinstance(value, list) or len(value) < 3:
        raise VCMError(f"{what} must be a list of at least 3 [x, y] points in 0..1")
    points = []
    for p in value:
        if not isinstance(p, list) or len(p) != 2:
            raise VCMError(f"{what}: each point must be [x, y] in 0..1, got {p!r}")
        points.append((_number(p[0], f"{what} x", 0, 1), _number(p[1], f"{what} y", 0, 1)))
    return tuple(points)


def _rule(doc: Any, where: str) -> Rule:
    if not isinstance(doc, dict):
        raise VCMError(f"{where} must be an object")
    known = {f for f in Rule.__dataclass_fields__}
    unknown = set(doc) - known
    if unknown:
        raise VCMError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    name = doc.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise VCMError(f"{where}: name must be 1-64 letters, digits, _ or -, got {name!r}")
    classes = doc.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c for c in classes)
    ):
        raise VCMError(f"{where}: classes must be a non-empty list of class names")
    return Rule(
        name=name,
        classes=frozenset(classes),
        min_score=_number(doc.get("min_score", 0.5), f"{where} min_score", 0, 1),
        zone=_polygon(doc["zone"], f"{where} zone") if doc.get("zone") is not None else None,
        min_frames=int(_number(doc.get("min_frames", 1), f"{where} min_frames", 1, 1000)),
        cooldown_s=_number(doc.get("cooldown_s", 30), f"{where} cooldown_s", 0, 86400),
        pre_s=_number(doc.get("pre_s", 5), f"{where} pre_s", 0, 300),
        post_s=_number(doc.get("post_s", 5), f"{where} post_s", 0, 300),
    )


def read_config(path: str | Path, what: str) -> dict:
    """A per-camera config file (JSON, or YAML for .yml/.yaml): an object keyed by camera id
    or ``*``; ``what`` names it in messages."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VCMError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yml", ".yaml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise VCMError(f"the {what} file {path} does not parse: {exc}") from None
    if not isinstance(doc, dict):
        raise VCMError(f"the {what} file {path} must hold an object keyed by camera id")
    for cam in doc:
        if cam != ANY_CAMERA:
            check_camera(cam)
    return doc


def load_rules(path: str | Path) -> dict[str, list[Rule]]:
    """Rules per camera from a JSON/YAML file; names unique per camera."""
    rules: dict[str, list[Rule]] = {}
    for cam, items in read_config(path, "rules").items():
        if not isinstance(items, list):
            raise VCMError(f"rules for camera {cam!r} must be a list")
        rules[cam] = [_rule(doc, f"rule {i} of camera {cam!r}") for i, doc in enumerate(items)]
        names = [r.name for r in rules[cam]]
        if len(set(names)) != len(names):
            raise VCMError(f"rule names of camera {cam!r} must be unique, got {names}")
    return rules


def load_masks(path: str | Path) -> dict[str, list[Polygon]]:
    """Mask polygons per camera from a JSON/YAML file."""
    masks: dict[str, list[Polygon]] = {}
    for cam, items in read_config(path, "masks").items():
        if not isinstance(items, list):
            raise VCMError(f"masks for camera {cam!r} must be a list of polygons")
        masks[cam] = [_polygon(p, f"mask {i} of camera {cam!r}") for i, p in enumerate(items)]
    return masks


def for_camera(table: dict[str, list], cam: str) -> list:
    """The camera's own entry, else the ``*`` entry, else nothing."""
    return table.get(cam, table.get(ANY_CAMERA, []))


def inside(point: tuple[float, float], polygon: Polygon) -> bool:
    """Even-odd ray casting: is ``point`` inside ``polygon`` (both in 0..1 units)?"""
    x, y = point
    hit = False
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            hit = not hit
    return hit


def foot(box: dict, width: int, height: int) -> tuple[float, float]:
    """A box's bottom centre in 0..1 picture units."""
    x0, _, x1, y1 = (float(v) for v in box["xyxy"])
    return ((x0 + x1) / 2 / max(1, width), y1 / max(1, height))


def unmasked(boxes: list[dict], masks: Iterable[Polygon], width: int, height: int) -> list[dict]:
    """The boxes whose bottom centre is in no mask."""
    masks = list(masks)
    return [b for b in boxes if not any(inside(foot(b, width, height), m) for m in masks)]


@dataclass
class Event:
    """An event as the worker tracks it and the server stores it (times: capture time, us)."""

    cam: str
    rule: str
    cls: str
    start: int
    end: int
    best: int  # ts of the frame with the highest matching score
    score: float
    frames: int = 1
    ended: bool = False
    pre_s: float = 5.0
    post_s: float = 5.0

    @property
    def id(self) -> str:
        return f"{self.cam}-{self.start}-{self.rule}"

    def doc(self) -> dict:
        """The JSON document the worker sends and the server keeps (``best``: a frame id)."""
        return {
            "id": self.id,
            "cam": self.cam,
            "rule": self.rule,
            "class": self.cls,
            "start": self.start,
            "end": self.end,
            "best": f"{self.cam}-{self.best}",
            "score": self.score,
            "frames": self.frames,
            "ended": self.ended,
            "pre_s": self.pre_s,
            "post_s": self.post_s,
        }


@dataclass
class _RuleState:
    run: int = 0  # consecutive matching frames
    run_start: int = 0
    run_best: tuple[float, int, str] = (-1.0, 0, "")  # score, ts, class
    event: Event | None = None
    quiet_until: int = 0  # no new event before this capture time (cooldown)
    last_ts: int = -1


@dataclass
class EventEngine:
    """Evaluates rules frame by frame (per camera, in capture order) and says what changed:
    ``("new" | "update" | "end", event)`` for each event touched by a frame."""

    rules: dict[str, list[Rule]]
    _state: dict[tuple[str, str], _RuleState] = field(default_factory=dict)

    def observe(
        self, cam: str, ts: int, boxes: list[dict], width: int, height: int
    ) -> list[tuple[str, Event]]:
        changes: list[tuple[str, Event]] = []
        for rule in for_camera(self.rules, cam):
            st = self._state.setdefault((cam, rule.name), _RuleState())
            if ts <= st.last_ts:
                continue  # out of order (a late frame): rules read frames in capture order
            st.last_ts = ts
            best = self._best(rule, boxes, width, height)
            ev = st.event
            if best is None:
                st.run = 0
                if ev is not None and ts >= ev.end + rule.post_s * 1e6:
                    ev.ended = True
                    st.event = None
                    st.quiet_until = ev.end + int(rule.cooldown_s * 1e6)
                    changes.append(("end", ev))
                continue
            score, cls = best
            if ev is not None:
                ev.end, ev.frames = ts, ev.frames + 1
                if score > ev.score:
                    ev.score, ev.best, ev.cls = score, ts, cls
                    changes.append(("update", ev))
                continue
            if st.run == 0:
                st.run_start, st.run_best = ts, (-1.0, 0, "")
            st.run += 1
            if score > st.run_best[0]:
                st.run_best = (score, ts, cls)
            if st.run >= rule.min_frames and ts >= st.quiet_until:
                s, b, c = st.run_best
                st.event = Event(
                    cam,
                    rule.name,
                    c,
                    st.run_start,
                    ts,
                    b,
                    s,
                    st.run,
                    False,
                    rule.pre_s,
                    rule.post_s,
                )
                changes.append(("new", st.event))
        return changes

    def close_all(self) -> list[Event]:
        """End every open event (the worker is stopping)."""
        out = []
        for st in self._state.values():
            if st.event is not None:
                st.event.ended = True
                out.append(st.event)
                st.event = None
        return out

    @staticmethod
    def _best(rule: Rule, boxes: list[dict], width: int, height: int) -> tuple[float, str] | None:
        found: tuple[float, str] | None = None
        for box in boxes:
            name, score = box.get("name"), box.get("conf")
            if name not in rule.classes or not isinstance(score, (int, float)):
                continue
            if score < rule.min_score:
                continue
            if rule.zone is not None and not inside(foot(box, width, height), rule.zone):
                continue
            if found is None or score > found[0]:
                found = (float(score), str(name))
        return found


def check_event(doc: Any) -> dict:
    """An event document from an analytics client, checked field by field (400 otherwise)."""
    if not isinstance(doc, dict):
        raise VCMError("an event must be a JSON object")

    def text(key: str, pattern: re.Pattern[str] = NAME) -> str:
        value = doc.get(key)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise VCMError(f"event {key} must be a name of letters, digits, _ or -, got {value!r}")
        return value

    def integer(key: str) -> int:
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**16:
            raise VCMError(f"event {key} must be a capture time in microseconds, got {value!r}")
        return value

    cam = check_camera(text("cam"))
    cls = doc.get("class")
    if not isinstance(cls, str) or not cls or len(cls) > 256 or not cls.isprintable():
        raise VCMError(f"event class must be a printable class name, got {cls!r}")
    start, end = integer("start"), integer("end")
    if end < start:
        raise VCMError(f"event end ({end}) is before its start ({start})")
    best = doc.get("best")
    if not isinstance(best, str) or not best.startswith(f"{cam}-"):
        raise VCMError(f"event best must be the id of one of camera {cam!r}'s frames")
    best_ts = best.removeprefix(f"{cam}-")
    if not best_ts.isdigit() or not start <= int(best_ts) <= end:
        raise VCMError("event best must be a frame of the event (start <= its ts <= end)")
    frames = doc.get("frames", 1)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise VCMError(f"event frames must be a positive count, got {frames!r}")
    ended = doc.get("ended", False)
    if not isinstance(ended, bool):
        raise VCMError("event ended must be true or false")
    return {
        "cam": cam,
        "rule": text("rule"),
        "class": cls,
        "start": start,
        "end": end,
        "best": int(best_ts),
        "score": _number(doc.get("score"), "event score", 0, 1),
        "frames": min(frames, 10**9),
        "ended": ended,
        "pre_s": _number(doc.get("pre_s", 5), "event pre_s", 0, 300),
        "post_s": _number(doc.get("post_s", 5), "event post_s", 0, 300),
    }
