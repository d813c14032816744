"""config.json read into an MGAConfig: every field checked for its JSON type before anything is built, so that a
hand-edited or foreign file fails with the field's name rather than deep inside a constructor."""
from __future__ import annotations

from typing import Any

from .backbones import BACKBONES
from .config import MGAConfig
from .confidence import is_finite_number

# config.json fields that must be JSON objects (mga.part_names, mga.confidence and mga.closeup check what is inside the
# first three; "extra" is free-form provenance that training.wise and training.soup add to)
OBJECT_FIELDS = ("part_names", "confidence", "closeup", "extra")


def config_from_json(raw: Any) -> MGAConfig:
    """The MGAConfig a parsed config.json describes, checked field by field before anything is built: the types
    MGAConfig's own range checks take for granted (a number, a list of three, a bool, an object), the backbone's
    name, then those ranges. Raises ValueError naming the field and what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError(f"config.json holds a JSON {type(raw).__name__}, not an object of MGAConfig fields")
    for name in ("alpha", "tau", "gem_p", "anchor"):
        if name in raw and not is_finite_number(raw[name]):
            raise ValueError(f"MGAConfig.{name} = {_short(raw[name])}: must be a finite number")
    for name in ("mean", "std"):
        value = raw.get(name, [])
        if name in raw and (not isinstance(value, list) or len(value) != 3
                            or not all(is_finite_number(v) for v in value)):
            raise ValueError(f"MGAConfig.{name} = {_short(value)}: must be a list of 3 finite numbers")
    if "figure_head" in raw and not isinstance(raw["figure_head"], bool):
        raise ValueError(f"MGAConfig.figure_head = {_short(raw['figure_head'])}: must be true or false")
    if "backbone" in raw and (not isinstance(raw["backbone"], str) or raw["backbone"] not in BACKBONES):
        raise ValueError(f"MGAConfig.backbone = {_short(raw['backbone'])}: must be one of {', '.join(BACKBONES)}")
    if "anchor_pool" in raw and not isinstance(raw["anchor_pool"], str):
        raise ValueError(f"MGAConfig.anchor_pool = {_short(raw['anchor_pool'])}: must be a string")
    for name in OBJECT_FIELDS:
        if name in raw and not isinstance(raw[name], dict):
            raise ValueError(f"MGAConfig.{name} = {_short(raw[name])}: must be a JSON object")
    return MGAConfig.from_dict(raw)


def _short(value: Any, limit: int = 60) -> str:
    """A config value as an error message quotes it: repr, cut short (a field may hold thousands of numbers)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
