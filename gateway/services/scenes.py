"""The scene catalogue (场景目录): where a code or card may be used, and what it may disclose.

Sources (each scene cites its own in `sources`): 渝府办发〔2021〕130号 附件 — the 20
"一卡通一码通" scenes (seed 004) — and the 身份识别 rows of 渝府办发〔2024〕73号's task table
(seed 000), with its card forms (实体卡/电子卡), application categories (身份识别/资金发放/
缴费支付) and depth targets (推进计划（应用深度）). docs/scenes.md lists every scene and
the data-minimisation rule: a gate of a scene receives ONLY the attribute names listed for it
(个人信息保护法 第六条, minimum necessary), and door scenes receive nothing but the subject.

The catalogue is live: operators edit a scene (`PUT /admin/v1/scenes/{id}`), the edit is
validated here (`validate_scene`, which names the offending field), stored with a new revision
in the shared scene store, and every worker swaps in the new catalogue within a poll interval
(`SceneCatalogue.swap`: the objects that hold the catalogue keep their reference).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.services.ports import SceneStore

__all__ = [
    "ATTRIBUTES",
    "CARD_FORMS",
    "CATEGORIES",
    "DEPTH_LEVELS",
    "FACES",
    "Category",
    "Scene",
    "SceneCatalogue",
    "SceneCatalogueError",
    "SceneInvalid",
    "validate_scene",
]

Category = Literal["identity", "payment", "disbursement"]

#: 身份识别 / 缴费支付 / 资金发放 — 渝府办发〔2024〕73号 说明 四 (应用类别).
CATEGORIES: Final[Mapping[str, str]] = MappingProxyType(
    {"identity": "身份识别", "payment": "缴费支付", "disbursement": "资金发放"})
#: 渝快码, 电子社保卡 code, 实体社保卡 tap.
FACES: Final[frozenset[str]] = frozenset({"ykm", "essc", "ssc_card"})
#: Card forms as the seeds name them: 73号 用卡方式 (实体卡, 电子卡) and 130号's 渝快码.
CARD_FORMS: Final[frozenset[str]] = frozenset({"实体卡", "电子卡", "渝快码"})
#: The attribute vocabulary the identity service can disclose (docs/scenes.md).
ATTRIBUTES: Final[frozenset[str]] = frozenset(
    {"concession", "adult", "name_masked", "ssc_card_no", "essc_region"})
#: 73号 说明 五.1: the share of scenes supporting the card for identity.
DEPTH_LEVELS: Final[tuple[tuple[str, float], ...]] = (
    ("三级", 0.90), ("二级", 0.70), ("一级", 0.50))
_TARGET_VALUES: Final = frozenset({"一级", "二级", "三级"})
#: `essc_regions: ["*"]` = every issuing region whose e-SSC platform the gateway trusts
#: (异地: 003 items 54–55 settle other provinces' insured at hospitals and pharmacies).
ANY_REGION: Final = "*"
_ID = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
_REGION = re.compile(r"^[A-Z]{2}$")
_SEEDS: Final = frozenset({"000", "001", "002", "003", "004"})

DEFAULT_PATH: Final = Path(__file__).resolve().parent.parent / "data" / "scenes.json"


class SceneCatalogueError(ValueError):
    """The catalogue file is not a valid catalogue (raised at load, never on a request)."""


class SceneInvalid(ValueError):
    """A scene does not validate; `field` names the first offending member (a JSON pointer
    inside the scene, e.g. `faces` or `sources/0/row`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Source:
    """Where a scene comes from: a seed document and its row (序号) or item."""

    seed: str
    row: int
    item: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "row": self.row, "item": self.item}


@dataclass(frozen=True)
class Scene:
    """One scene: accepted faces, categories, and the only attributes it may receive."""

    id: str
    name_zh: str
    name_en: str
    categories: tuple[str, ...]
    faces: frozenset[str]
    attributes: tuple[str, ...]
    essc_regions: frozenset[str]
    card_forms: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    #: 73号 推进计划: {"2024": "一级", …}; a year may carry the table's words instead
    depth_target: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""
    revision: int = 1

    @property
    def category(self) -> str:
        """The first category (the single `category` of catalogue format v0)."""
        return self.categories[0]

    @property
    def is_identity(self) -> bool:
        """A 身份识别 scene: counted by the application depth (73号 说明 五.1)."""
        return "identity" in self.categories

    def permits(self, face: str, region: str | None = None) -> bool:
        """Scene policy: the face is accepted and, for e-SSC, the issuing region too."""
        if face not in self.faces:
            return False
        if face == "essc":
            return region is not None and (region in self.essc_regions
                                           or ANY_REGION in self.essc_regions)
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            "category": self.category,
            "categories": list(self.categories),
            "faces": sorted(self.faces),
            "card_forms": list(self.card_forms),
            "attributes": list(self.attributes),
            "essc_regions": sorted(self.essc_regions),
            "sources": [s.to_json() for s in self.sources],
            "depth_target": dict(self.depth_target),
            "notes": self.notes,
            "revision": self.revision,
        }


def _strings(raw: Mapping[str, Any], name: str, *, required: bool = True,
             allowed: Iterable[str] | None = None) -> tuple[str, ...]:
    value = raw.get(name)
    if value is None:
        if required:
            raise SceneInvalid(name, "is required")
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SceneInvalid(name, "must be a list of strings")
    if len(set(value)) != len(value):
        raise SceneInvalid(name, "has duplicates")
    if allowed is not None:
        allowed = frozenset(allowed)
        for i, v in enumerate(value):
            if v not in allowed:
                raise SceneInvalid(f"{name}/{i}", f"{v!r} is not one of {sorted(allowed)}")
    return tuple(value)


def _text(raw: Mapping[str, Any], name: str, max_len: int, required: bool = True) -> str:
    value = raw.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_len:
        raise SceneInvalid(name, f"must be a {'non-empty ' if required else ''}string of at "
                                 f"most {max_len} characters")
    return value


_MEMBERS: Final = frozenset({
    "id", "name_zh", "name_en", "category", "categories", "faces", "card_forms",
    "attributes", "essc_regions", "sources", "depth_target", "notes", "revision"})


def validate_scene(raw: Any, *, scene_id: str | None = None) -> Scene:
    """A scene from its JSON form, or `SceneInvalid` naming the field. `scene_id` (the URL's)
    must equal the body's `id` when both are given. `revision` in the input is ignored (the
    store assigns it)."""
    if not isinstance(raw, Mapping):
        raise SceneInvalid("", "a scene must be a JSON object")
    unknown = sorted(set(raw) - _MEMBERS)
    if unknown:
        raise SceneInvalid(unknown[0], "is not a scene member")
    sid = raw.get("id", scene_id)
    if not isinstance(sid, str) or not _ID.match(sid):
        raise SceneInvalid("id", "must be 2-48 characters of a-z, 0-9 and _, starting a-z")
    if scene_id is not None and sid != scene_id:
        raise SceneInvalid("id", "differs from the scene id in the path")
    if "categories" in raw:
        categories = _strings(raw, "categories", allowed=CATEGORIES)
    elif isinstance(raw.get("category"), str):  # catalogue format v0: one category
        categories = _strings({"category": [raw["category"]]}, "category", allowed=CATEGORIES)
    else:
        raise SceneInvalid("categories", "is required")
    if not categories:
        raise SceneInvalid("categories", "must name at least one category")
    if "category" in raw and "categories" in raw and raw["category"] != categories[0]:
        raise SceneInvalid("category", "must be the first of categories (or be left out)")
    faces = frozenset(_strings(raw, "faces", allowed=FACES))
    if not faces:
        raise SceneInvalid("faces", "must name at least one face")
    card_forms = _strings(raw, "card_forms", required=False, allowed=CARD_FORMS)
    attributes = _strings(raw, "attributes", required=False, allowed=ATTRIBUTES)
    regions = frozenset(_strings(raw, "essc_regions", required=False))
    for r in regions:
        if r != ANY_REGION and not _REGION.match(r):
            raise SceneInvalid("essc_regions", f"{r!r} is not a two-letter region or '*'")
    if "essc" in faces and not regions:
        raise SceneInvalid("essc_regions", "must name at least one region when essc is a face")
    sources: list[Source] = []
    raw_sources = raw.get("sources", [])
    if not isinstance(raw_sources, list):
        raise SceneInvalid("sources", "must be a list")
    for i, s in enumerate(raw_sources):
        if not isinstance(s, Mapping):
            raise SceneInvalid(f"sources/{i}", "must be an object {seed, row, item}")
        if s.get("seed") not in _SEEDS:
            raise SceneInvalid(f"sources/{i}/seed", f"must be one of {sorted(_SEEDS)}")
        row = s.get("row")
        if not isinstance(row, int) or isinstance(row, bool) or not 1 <= row <= 999:
            raise SceneInvalid(f"sources/{i}/row", "must be the row number (1-999)")
        item = s.get("item", "")
        if not isinstance(item, str) or len(item) > 200:
            raise SceneInvalid(f"sources/{i}/item", "must be a string of at most 200 characters")
        sources.append(Source(seed=str(s["seed"]), row=row, item=item))
    target = raw.get("depth_target", {})
    if not isinstance(target, Mapping):
        raise SceneInvalid("depth_target", "must be an object {year: 一级|二级|三级|note}")
    for year, level in target.items():
        if not re.fullmatch(r"20[2-9][0-9]|note", str(year)):
            raise SceneInvalid(f"depth_target/{year}", "keys are years (2024…) or 'note'")
        if not isinstance(level, str) or (year != "note" and level not in _TARGET_VALUES) \
                or len(level) > 200:
            raise SceneInvalid(f"depth_target/{year}", "must be 一级, 二级 or 三级")
    return Scene(
        id=sid, name_zh=_text(raw, "name_zh", 100), name_en=_text(raw, "name_en", 100),
        categories=categories, faces=faces, attributes=attributes, essc_regions=regions,
        card_forms=card_forms, sources=tuple(sources), depth_target=dict(target),
        notes=_text(raw, "notes", 2000, required=False),
        revision=raw["revision"] if isinstance(raw.get("revision"), int) else 1)


def _scene(raw: Any) -> Scene:
    try:
        return validate_scene(raw)
    except SceneInvalid as exc:
        sid = raw.get("id") if isinstance(raw, Mapping) else None
        raise SceneCatalogueError(f"scene {sid}: {exc}") from exc


class SceneCatalogue:
    """The catalogue a worker serves. Immutable snapshots; `swap` replaces the snapshot in
    place (one attribute assignment: atomic for the single-threaded event loop), so every
    holder of this object sees the new catalogue at once."""

    def __init__(self, scenes: Iterable[Scene], version: str = "0") -> None:
        self._by_id: Mapping[str, Scene] = self._index(scenes)
        self.version = version

    @staticmethod
    def _index(scenes: Iterable[Scene]) -> Mapping[str, Scene]:
        by_id: dict[str, Scene] = {}
        for s in scenes:
            if s.id in by_id:
                raise SceneCatalogueError(f"duplicate scene id {s.id}")
            by_id[s.id] = s
        return MappingProxyType(by_id)

    @classmethod
    def load(cls, path: Path | str | None = None) -> SceneCatalogue:
        """Read a catalogue file (default: gateway/data/scenes.json)."""
        p = Path(path) if path is not None else DEFAULT_PATH
        try:
            doc = json.loads(p.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise SceneCatalogueError(f"cannot read scene catalogue {p}: {exc}") from exc
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: Any) -> SceneCatalogue:
        if not isinstance(doc, dict) or not isinstance(doc.get("scenes"), list):
            raise SceneCatalogueError("scene catalogue must be an object with a 'scenes' list")
        return cls((_scene(s) for s in doc["scenes"]), version=str(doc.get("version", "0")))

    def swap(self, other: SceneCatalogue) -> None:
        """Take over `other`'s scenes and version (live reload)."""
        self._by_id, self.version = other._by_id, other.version

    def get(self, scene_id: str) -> Scene | None:
        return self._by_id.get(scene_id)

    def all(self) -> tuple[Scene, ...]:
        return tuple(self._by_id.values())

    def __contains__(self, scene_id: object) -> bool:
        return scene_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def to_json(self) -> dict[str, Any]:
        """What GET /v1/scenes serves."""
        return {"version": self.version, "scenes": [s.to_json() for s in self.all()]}


async def catalogue_from_store(store: SceneStore) -> SceneCatalogue:
    """Build the catalogue the store holds (validated again: a store edited by hand with a
    bad entry keeps a worker on the catalogue it has — the caller catches the error)."""
    version, scenes = await store.snapshot()
    return SceneCatalogue((_scene(s) for s in scenes), version=str(version))
