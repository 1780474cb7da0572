"""Codec presets: the backend and every parameter that shapes the stream.

A preset's id and a hash of its parameters (plus the backend's identity) are written into each
stream, so a reader refuses streams whose decoding rules it does not have.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from vcm_plugin.errors import VCMError


@dataclass(frozen=True)
class Preset:
    name: str
    preset_id: int
    backend: str
    semantic_scale: float  # layer 0..2 code the latent of the image resized by this factor
    coarse_entries: int  # palette entries in the semantic state
    fine_entries: int  # palette entries after the reverse chain's splits
    content_classes: int  # pseudo-label classes steering the palette allocation
    palette_step: float
    index_penalty: float  # rate weight of index-map smoothing, in squared semantic steps
    semantic_step: float
    split_step: float | None  # None: no split layer (a single-palette-state stream)
    refine_steps: tuple[float, ...]  # one latent refinement layer per step, coarse to fine
    texture_qualities: tuple[int, ...]  # one texture layer per (AVIF) quality, coarse to fine
    deadzone: float = 0.2
    #: "residual": each texture layer codes the residual against everything before it (0.1);
    #: "photo": each codes the photo itself and needs no other layer (0.3: a simulcast);
    #: "layered": the texture layers are the layers of one layered AVIF of the photo, each
    #: refining the one before and needing no latent layer (0.4; at most four).
    texture_coding: str = "residual"
    #: Analytics texture layers, after the latent ones and before the viewer's: (AVIF quality,
    #: Gaussian blur in pixels) each, coding the low-passed photo (``TexturePhoto.blur``).
    analytics_textures: tuple[tuple[int, float], ...] = ()
    #: The name this preset had when its streams were first written; it enters the config hash,
    #: so a rename keeps old streams decoding (the DCT preset was called "default" until 0.2).
    hash_name: str | None = None
    #: The operating point analytics should read (``layers="analytics"``): the smallest that
    #: kept >= 90 % of the uncompressed detector mAP on the public sets (README, "Operating
    #: points"). Advice, not a decoding rule: it stays out of the config hash, so re-measuring
    #: it never orphans a stream.
    analytics_point: int = 1

    def __post_init__(self) -> None:
        if self.texture_coding == "layered" and not 1 <= len(self.texture_qualities) <= 4:
            raise VCMError(f"preset {self.name!r}: a layered texture holds 1 to 4 layers")

    @property
    def num_layers(self) -> int:
        splits = 0 if self.split_step is None else 1
        return (
            1
            + splits
            + len(self.refine_steps)
            + len(self.analytics_textures)
            + len(self.texture_qualities)
        )

    def config_hash(self, backend_identity: str) -> bytes:
        fields = asdict(self)
        fields["name"] = fields.pop("hash_name") or self.name
        for key in _NOT_HASHED:
            del fields[key]
        for key, value in _ADDED_FIELDS.items():  # 0.1's hashes did not have them
            if fields[key] == value:
                del fields[key]
        text = json.dumps(fields, sort_keys=True) + backend_identity
        return hashlib.blake2b(text.encode(), digest_size=8).digest()


#: Fields added after streams were first written, with the value those streams imply.
_ADDED_FIELDS = {"texture_coding": "residual", "analytics_textures": ()}
#: Fields that do not change how a stream decodes.
_NOT_HASHED = ("analytics_point",)
#: ``layers="analytics"``: the stream's preset's ``analytics_point``.
ANALYTICS = "analytics"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # training-free DCT latent: no weights, fast; far less accurate for analytics
        Preset(
            "fast",
            1,
            "dct",
            semantic_scale=0.5,
            coarse_entries=8,
            fine_entries=32,
            content_classes=4,
            palette_step=0.5,
            index_penalty=0.5,
            semantic_step=1.5,
            split_step=0.5,
            refine_steps=(0.75,),
            texture_qualities=(25, 50),
            hash_name="default",
            analytics_point=5,
        ),
        # the TAEF2 generator latent (weights ship in the package): the accurate one. Three
        # latent layers (the low-rate analytics points: palette state, splits, one
        # refinement), then the texture chain: the photo as one layered AVIF whose first
        # layer is the analytics point and whose later layers refine it for a person. A point
        # holds the points below it on the climb (README: "Stream layout").
        Preset(
            "tae",
            5,
            "tae",
            semantic_scale=0.5,
            coarse_entries=8,
            fine_entries=32,
            content_classes=4,
            palette_step=0.25,
            index_penalty=0.5,
            semantic_step=3.0,
            split_step=0.25,
            refine_steps=(1.5,),
            texture_qualities=(35, 60, 80),
            deadzone=0.35,
            texture_coding="layered",
            analytics_point=4,
        ),
        # 0.3's generator preset: four latent layers, two analytics textures (the low-passed
        # photo in AVIF), five viewer textures (AVIF q5..q75), every texture layer standalone
        # (a simulcast); kept so its streams decode
        Preset(
            "tae-0.3",
            4,
            "tae",
            semantic_scale=0.5,
            coarse_entries=8,
            fine_entries=32,
            content_classes=4,
            palette_step=0.25,
            index_penalty=0.5,
            semantic_step=3.0,
            split_step=0.25,
            refine_steps=(1.5, 0.75),
            analytics_textures=((30, 0.5), (45, 0.5)),
            texture_qualities=(5, 20, 35, 50, 75),
            deadzone=0.35,
            texture_coding="photo",
            hash_name="tae",
            analytics_point=6,
        ),
        # 0.2's generator preset: four texture layers, no analytics textures; kept so its
        # streams decode
        Preset(
            "tae-0.2",
            3,
            "tae",
            semantic_scale=0.5,
            coarse_entries=8,
            fine_entries=32,
            content_classes=4,
            palette_step=0.25,
            index_penalty=0.5,
            semantic_step=3.0,
            split_step=0.25,
            refine_steps=(1.5, 0.75),
            texture_qualities=(20, 35, 50, 70),
            deadzone=0.35,
            texture_coding="photo",
            hash_name="tae",
            analytics_point=7,
        ),
        # 0.1's generator preset: texture layers code the residual against the layers before
        # (a person's view cost +76 % over AVIF); kept so its streams decode
        Preset(
            "tae-residual",
            2,
            "tae",
            semantic_scale=0.5,
            coarse_entries=8,
            fine_entries=32,
            content_classes=4,
            palette_step=0.25,
            index_penalty=0.5,
            semantic_step=3.0,
            split_step=0.25,
            refine_steps=(1.5, 0.75),
            texture_qualities=(25, 50),
            deadzone=0.35,
            hash_name="tae",
        ),
    )
}
PRESET_BY_ID = {p.preset_id: p for p in PRESETS.values()}
#: What ``Codec()``, the CLI and every integration use when no preset is named.
DEFAULT_PRESET = "tae"
#: Names that are not presets of their own; "default" follows ``DEFAULT_PRESET`` (before 0.2
#: it named the DCT preset, now "fast").
PRESET_ALIASES = {"default": DEFAULT_PRESET}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[PRESET_ALIASES.get(name, name)]
    except (KeyError, TypeError):
        known = ", ".join([*PRESETS, *PRESET_ALIASES])
        raise VCMError(f"unknown preset {name!r}; known: {known}") from None


def register(preset: Preset) -> Preset:
    """Add ``preset`` to the table, so that ``Codec(preset.name)`` encodes with it and streams
    carrying its ``preset_id`` decode. Registering the same preset again is a no-op; a name, an
    alias or an id already taken by a different preset raises :class:`VCMError` (a stream's id
    must keep naming one set of rules)."""
    if preset.name in PRESET_ALIASES:
        raise VCMError(f"preset name {preset.name!r} is an alias")
    for taken in (PRESETS.get(preset.name), PRESET_BY_ID.get(preset.preset_id)):
        if taken is not None and taken != preset:
            raise VCMError(
                f"preset {preset.name!r} (id {preset.preset_id}) clashes with the "
                f"registered preset {taken.name!r} (id {taken.preset_id})"
            )
    PRESETS[preset.name] = preset
    PRESET_BY_ID[preset.preset_id] = preset
    return preset
