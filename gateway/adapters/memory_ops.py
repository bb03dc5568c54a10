"""In-memory operator stores for the one-process sandbox and unit tests: the live scene
catalogue, the venue registry (点位) with its gate assignments, and the named operators.

Nothing survives a restart; one event loop makes every method atomic (no await inside).
Same contract as gateway/adapters/redis_ops.py (tests/contract/test_ops_stores.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any


class MemorySceneStore:
    def __init__(self, history_max: int = 50) -> None:
        self._version = 0
        self._scenes: dict[str, dict[str, Any]] = {}  # insertion order = catalogue order
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._history_max = history_max

    async def version(self) -> int:
        return self._version

    async def seed(self, scenes: Sequence[Mapping[str, Any]]) -> bool:
        if self._version:
            return False
        for s in scenes:
            scene = {**copy.deepcopy(dict(s)), "revision": 1}
            self._scenes[scene["id"]] = scene
            self._history[scene["id"]] = [{"revision": 1, "scene": scene,
                                           "updated_by": "seed", "updated_at": None}]
        self._version = 1
        return True

    async def snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        return self._version, [copy.deepcopy(s) for s in self._scenes.values()]

    async def put(self, scene: Mapping[str, Any], expected_revision: int | None,
                  meta: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
        sid = str(scene["id"])
        current = self._scenes.get(sid)
        revision = int(current["revision"]) if current else 0
        if expected_revision is not None and expected_revision != revision:
            return None
        stored = {**copy.deepcopy(dict(scene)), "revision": revision + 1}
        self._scenes[sid] = stored
        hist = self._history.setdefault(sid, [])
        hist.append({"revision": revision + 1, "scene": stored, **dict(meta)})
        del hist[:-self._history_max]
        self._version += 1
        return self._version, copy.deepcopy(stored)

    async def history(self, scene_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return [copy.deepcopy(h) for h in reversed(self._history.get(scene_id, [])[-limit:])]

    async def ping(self) -> None:
        return None


class MemoryVenueStore:
    def __init__(self) -> None:
        self._version = 0
        self._venues: dict[str, dict[str, Any]] = {}
        self._gates: dict[str, str] = {}

    async def version(self) -> int:
        return self._version

    async def get(self, venue_id: str) -> dict[str, Any] | None:
        v = self._venues.get(venue_id)
        return copy.deepcopy(v) if v else None

    async def list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(v) for v in self._venues.values()]

    async def put_many(self, venues: Sequence[Mapping[str, Any]]) -> int:
        """Upsert all of them at once; answers the new version."""
        for v in venues:
            self._venues[str(v["id"])] = copy.deepcopy(dict(v))
        self._version += 1
        return self._version

    async def assign_gate(self, gate_id: str, venue_id: str) -> int:
        self._gates[gate_id] = venue_id
        self._version += 1
        return self._version

    async def gate_venues(self) -> dict[str, str]:
        return dict(self._gates)

    async def ping(self) -> None:
        return None


class MemoryOperatorStore:
    def __init__(self) -> None:
        self._by_name: dict[str, dict[str, Any]] = {}
        self._by_token: dict[str, str] = {}

    async def get(self, name: str) -> dict[str, Any] | None:
        op = self._by_name.get(name)
        return dict(op) if op else None

    async def by_token_hash(self, token_hash: str) -> dict[str, Any] | None:
        name = self._by_token.get(token_hash)
        return await self.get(name) if name else None

    async def create(self, operator: Mapping[str, Any]) -> bool:
        """False when the name is taken."""
        name = str(operator["name"])
        if name in self._by_name:
            return False
        self._by_name[name] = dict(operator)
        self._by_token[str(operator["token_hash"])] = name
        return True

    async def update(self, operator: Mapping[str, Any]) -> None:
        self._by_name[str(operator["name"])] = dict(operator)

    async def list(self) -> list[dict[str, Any]]:
        return [dict(o) for o in self._by_name.values()]

    async def ping(self) -> None:
        return None


class MemoryStatsStore:
    """The roll-up tables in memory (sandbox): rows and sketches, one dict per day."""

    def __init__(self) -> None:
        self._days: dict[str, dict[tuple[str, ...], Any]] = {}
        self._sketches: dict[str, dict[tuple[str, ...], bytearray]] = {}
        #: the same counts summed at the sketch levels (day, district|*, scene|*, face)
        self._levels: dict[str, dict[tuple[str, ...], Any]] = {}
        #: per day, the venues with at least one allow (what depth asks)
        self._verified: dict[str, set[str]] = {}

    async def add(self, rows: Mapping[Any, Any], sketches: Mapping[Any, Any]) -> None:
        from gateway.services.stats import FORMS, Rollup, hll_merge, level_keys

        for key, row in rows.items():
            dk, d, sc, venue, face = key
            day = self._days.setdefault(dk, {})
            acc = day.get(key)
            if acc is None:
                acc = day[key] = Rollup()
            acc.add(row)
            levels = self._levels.setdefault(dk, {})
            for lk in level_keys(dk, d, sc, face):
                lv = levels.get(lk)
                if lv is None:
                    lv = levels[lk] = Rollup()
                lv.add(row)
            if row.allows and face in FORMS:
                self._verified.setdefault(dk, set()).add(venue)
        for key, reg in sketches.items():
            held = self._sketches.setdefault(key[0], {})
            if key in held:
                hll_merge(held[key], reg)
            else:
                held[key] = bytearray(reg)

    async def rows(self, first_day: str, last_day: str, district: str | None = None,
                   scene: str | None = None) -> list[tuple[Any, Any]]:
        out = []
        for day in sorted(d for d in self._days if first_day <= d <= last_day):
            for key, row in self._days[day].items():
                if (district is None or key[1] == district) and \
                        (scene is None or key[2] == scene):
                    out.append((key, row))
        return out

    async def sketches(self, first_day: str, last_day: str, district: str,
                       scene: str) -> list[tuple[Any, Any]]:
        """`district`/`scene`: a value, "*" (the all-of level) or "" (every value)."""
        out = []
        for day in sorted(d for d in self._sketches if first_day <= d <= last_day):
            for key, reg in self._sketches[day].items():
                if (key[1] == district or (district == "" and key[1] != "*")) and \
                        (key[2] == scene or (scene == "" and key[2] != "*")):
                    out.append((key, reg))
        return out

    async def levels(self, first_day: str, last_day: str, district: str,
                     scene: str) -> list[tuple[Any, Any]]:
        """Counts at a level, like `sketches`."""
        out = []
        for day in sorted(d for d in self._levels if first_day <= d <= last_day):
            for key, row in self._levels[day].items():
                if (key[1] == district or (district == "" and key[1] != "*")) and \
                        (key[2] == scene or (scene == "" and key[2] != "*")):
                    out.append((key, row))
        return out

    async def totals(self, first_day: str, last_day: str, group_by: Sequence[str],
                     district: str | None, scene: str | None) -> list[tuple[Any, Any]]:
        from gateway.services.stats import LEVEL_KEYS, ROW_KEYS, fold, level_of_question

        if "venue" in group_by:
            return fold(await self.rows(first_day, last_day, district, scene), ROW_KEYS,
                        group_by)
        level_d, level_s = level_of_question(group_by, district, scene)
        return fold(await self.levels(first_day, last_day, level_d, level_s), LEVEL_KEYS,
                    group_by)

    async def verified_venues(self, first_day: str, last_day: str) -> set[str]:
        out: set[str] = set()
        for day, venues in self._verified.items():
            if first_day <= day <= last_day:
                out |= venues
        return out

    async def clear_from(self, first_day: str) -> int:
        for table in (self._levels, self._verified):
            for d in [d for d in table if d >= first_day]:
                del table[d]
        gone = [d for d in self._days if d >= first_day]
        n = sum(len(self._days[d]) for d in gone)
        for d in gone:
            del self._days[d]
        for d in [d for d in self._sketches if d >= first_day]:
            del self._sketches[d]
        return n
