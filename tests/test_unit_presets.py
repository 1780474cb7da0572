"""Unit tests of the preset table (``vcm_plugin.codec.presets``): lookups by name, alias and
id; distinct ids and hashes; what the config hash covers; and hashes stable against the
streams earlier releases wrote (``tests/data``), since a changed hash orphans those streams."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from vcm_plugin import Codec
from vcm_plugin.codec import container
from vcm_plugin.codec.api import layer_roles
from vcm_plugin.codec.backends import BACKEND_IDS
from vcm_plugin.codec.presets import (
    ANALYTICS,
    DEFAULT_PRESET,
    PRESET_ALIASES,
    PRESET_BY_ID,
    PRESETS,
    Preset,
    get_preset,
)
from vcm_plugin.errors import VCMError

DATA = Path(__file__).resolve().parent / "data"


def test_names_and_ids_are_unique_and_fit_the_header():
    assert all(name == p.name for name, p in PRESETS.items())
    assert len({p.preset_id for p in PRESETS.values()}) == len(PRESETS)
    assert all(1 <= p.preset_id <= 255 for p in PRESETS.values())  # a u8 in the header
    assert {p.name for p in PRESET_BY_ID.values()} == set(PRESETS)
    for p in PRESETS.values():
        assert PRESET_BY_ID[p.preset_id] is p


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_lookup_by_name(name):
    assert get_preset(name) is PRESETS[name]


def test_aliases():
    assert DEFAULT_PRESET in PRESETS
    assert get_preset("default") is PRESETS[DEFAULT_PRESET]
    assert not set(PRESET_ALIASES) & set(PRESETS)  # an alias never shadows a preset
    assert all(target in PRESETS for target in PRESET_ALIASES.values())


@pytest.mark.parametrize("bad", ["nope", "", "TAE", "fast ", None, 4, ("tae",), ["tae"]])
def test_unknown_presets_raise_vcmerror_listing_the_known_ones(bad):
    with pytest.raises(VCMError, match=re.escape(f"unknown preset {bad!r}; known: ")) as info:
        get_preset(bad)
    assert all(name in str(info.value) for name in [*PRESETS, *PRESET_ALIASES])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_stream_layout(name):
    p = PRESETS[name]
    assert p.backend in BACKEND_IDS
    roles = layer_roles(p)
    assert len(roles) == p.num_layers <= container.MAX_LAYERS
    assert roles[0] == "semantic"
    assert roles.count("splits") == (p.split_step is not None)
    assert roles.count("refinement") == len(p.refine_steps)
    assert roles.count("texture-analytics") == len(p.analytics_textures)
    assert 1 <= p.analytics_point <= p.num_layers
    assert p.texture_coding in ("residual", "photo", "layered")
    if p.texture_coding == "layered":  # libavif codes at most 4 layers in one image item
        assert 1 <= roles.count("texture") == len(p.texture_qualities) <= 4
    assert all(0 <= q <= 100 for q in p.texture_qualities)
    assert list(p.texture_qualities) == sorted(p.texture_qualities)  # coarse to fine
    assert p.fine_entries >= p.coarse_entries >= 1


# -- the config hash ----------------------------------------------------------------------------

#: a changed value for every field that shapes a stream
CHANGES = {
    "preset_id": 99,
    "backend": "dct-other",
    "semantic_scale": 0.25,
    "coarse_entries": 7,
    "fine_entries": 31,
    "content_classes": 3,
    "palette_step": 0.3,
    "index_penalty": 0.6,
    "semantic_step": 2.0,
    "split_step": None,
    "refine_steps": (1.0,),
    "texture_qualities": (30,),
    "deadzone": 0.3,
    "texture_coding": "photo",
    "analytics_textures": ((40, 1.0),),
}


def test_changes_cover_every_hashed_field():
    names = {f.name for f in dataclasses.fields(Preset)}
    assert set(CHANGES) == names - {"name", "hash_name", "analytics_point"}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_decoding_parameter_changes_the_hash(field):
    base = PRESETS["fast"]
    assert getattr(base, field) != CHANGES[field]
    changed = dataclasses.replace(base, **{field: CHANGES[field]})
    assert changed.config_hash("id") != base.config_hash("id")


def test_what_does_not_decode_differently_keeps_the_hash():
    p = PRESETS["tae"]
    assert dataclasses.replace(p, analytics_point=1).config_hash("x") == p.config_hash("x")
    # hash_name is the name the hash uses: a renamed preset keeps its streams
    renamed = dataclasses.replace(PRESETS["fast"], name="renamed")
    assert renamed.config_hash("x") == PRESETS["fast"].config_hash("x")
    unnamed = dataclasses.replace(PRESETS["tae"], name="renamed")
    assert unnamed.config_hash("x") != PRESETS["tae"].config_hash("x")


def test_the_backend_identity_enters_the_hash():
    p = PRESETS["fast"]
    assert p.config_hash("dct-v1-2.0") != p.config_hash("dct-v1-2.5")
    h = p.config_hash("dct-v1-2.0")
    assert isinstance(h, bytes) and len(h) == 8  # the header's 8-byte field
    assert p.config_hash("dct-v1-2.0") == h


def test_every_preset_has_its_own_hash():
    hashes = {name: p.config_hash("same backend") for name, p in PRESETS.items()}
    assert len(set(hashes.values())) == len(hashes)


def _committed_streams() -> dict[int, set[bytes]]:
    """Config hashes of the committed valid streams, per preset id."""
    out: dict[int, set[bytes]] = {}
    for path in sorted((DATA / "compat").glob("*.vcm")) + sorted((DATA / "seeds").glob("*.vcm")):
        h = container.parse_header(path.read_bytes(), 1 << 40)
        out.setdefault(h.preset_id, set()).add(h.config_hash)
    return out


#: streams written by 0.3.0 carry this for preset "tae" (id 4, now named "tae-0.3"), and 0.4's
#: "tae" (id 5) the other: format constants like the others, so a change here orphans every
#: stream its release wrote
TAE_0_3_HASH = "560513d02b782d05"
TAE_0_4_HASH = "17cb298c6ac2bb9a"


def test_hashes_are_the_ones_released_streams_carry():
    committed = _committed_streams()
    assert set(committed) >= {1, 2, 3}  # fast, tae-residual, tae-0.2
    for preset_id, hashes in committed.items():
        name = PRESET_BY_ID[preset_id].name
        assert hashes == {bytes.fromhex(Codec(name, device="cpu").config_hash)}, name
    assert Codec("tae-0.3", device="cpu").config_hash == TAE_0_3_HASH
    assert Codec("tae", device="cpu").config_hash == TAE_0_4_HASH


def test_analytics_is_a_named_point():
    assert ANALYTICS == "analytics"
    assert ANALYTICS not in PRESETS


def test_backends_are_registered_like_presets():
    from vcm_plugin.codec import backends
    from vcm_plugin.errors import VCMError

    assert backends.BACKEND_IDS == {"dct": 1, "tae": 2}  # ids in streams never change
    tae = backends.BACKENDS["tae"]
    assert backends.register(tae) is tae  # again: a no-op
    for clash in (
        backends.Backend("tae", 9, tae.factory),
        backends.Backend("other", 2, tae.factory),
    ):
        with pytest.raises(VCMError, match="clashes"):
            backends.register(clash)
    with pytest.raises(VCMError, match="unknown backend 'nope'; known: dct, tae"):
        backends.create("nope")
    assert backends.create("dct").name == "dct"
