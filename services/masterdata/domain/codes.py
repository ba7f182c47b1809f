"""Code systems: an immutable in-memory catalogue loaded from the JSON files in data/.

Code systems change with releases of the service, not at run time, so they live in files
under version control (services/masterdata/data/code_systems/*.json) rather than in the
database. A system is found by its short id ("9060"), its OID, its urn:oid URI or an alias.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "code_systems"
URN_OID = "urn:oid:"

# Reasons of CodeValidation.reason.
UNKNOWN_CODE_SYSTEM = "UNKNOWN_CODE_SYSTEM"
UNKNOWN_CODE = "UNKNOWN_CODE"
INACTIVE_CODE = "INACTIVE_CODE"


@dataclass(frozen=True)
class Code:
    code: str
    display: str
    active: bool = True


@dataclass(frozen=True)
class CodeSystem:
    id: str
    system: str  # canonical URI, e.g. urn:oid:2.16.578.1.12.4.1.1.9060
    title: str
    codes: tuple[Code, ...]
    aliases: tuple[str, ...] = ()
    _by_code: dict[str, Code] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_code.update({c.code: c for c in self.codes})

    def get(self, code: str) -> Code | None:
        return self._by_code.get(code)

    def names(self) -> set[str]:
        names = {self.id, self.system, *self.aliases}
        if self.system.startswith(URN_OID):
            names.add(self.system[len(URN_OID) :])
        return names


@dataclass(frozen=True)
class CodeCheck:
    valid: bool
    system: str  # canonical URI, '' when the system is unknown
    code: str
    display: str = ""
    reason: str = ""


class CodeCatalog:
    def __init__(self, systems: list[CodeSystem]) -> None:
        self.systems = sorted(systems, key=lambda s: s.id)
        self._index: dict[str, CodeSystem] = {}
        for system in self.systems:
            for name in system.names():
                self._index[name] = system

    @classmethod
    def load(cls, directory: Path = DATA_DIR) -> CodeCatalog:
        systems = []
        for path in sorted(directory.glob("*.json")):
            doc = json.loads(path.read_text(encoding="utf-8"))
            systems.append(
                CodeSystem(
                    id=doc["id"],
                    system=doc["system"],
                    title=doc["title"],
                    aliases=tuple(doc.get("aliases", ())),
                    codes=tuple(
                        Code(c["code"], c["display"], c.get("active", True)) for c in doc["codes"]
                    ),
                )
            )
        return cls(systems)

    def find(self, name: str) -> CodeSystem | None:
        return self._index.get(name.strip())

    def check(self, system_name: str, code: str) -> CodeCheck:
        system = self.find(system_name)
        if system is None:
            return CodeCheck(False, "", code, reason=UNKNOWN_CODE_SYSTEM)
        found = system.get(code)
        if found is None:
            return CodeCheck(False, system.system, code, reason=UNKNOWN_CODE)
        if not found.active:
            return CodeCheck(False, system.system, code, found.display, INACTIVE_CODE)
        return CodeCheck(True, system.system, code, found.display)

    def is_valid(self, system_name: str, code: str) -> bool:
        return self.check(system_name, code).valid

    def display(self, system_name: str, code: str) -> str:
        return self.check(system_name, code).display
