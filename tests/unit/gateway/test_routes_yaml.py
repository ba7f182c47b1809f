"""gateway/routes.yaml names only methods and paths that exist in the contracts."""

from __future__ import annotations

import pytest

from gateway.surface import DESCRIPTORS, ROUTES, EdgeSpec, load_methods

pytestmark = pytest.mark.skipif(not DESCRIPTORS.exists(), reason="run `make proto` first")


def test_every_entry_names_an_existing_method_or_path() -> None:
    spec = EdgeSpec.load(ROUTES)
    methods = load_methods(DESCRIPTORS)
    keys = {m.key for m in methods} | {f"{m.service}/*" for m in methods}
    templates = {rule.template for m in methods for rule in m.rules}
    assert sorted(spec.internal_only - keys) == []
    assert sorted(spec.anonymous - keys - templates) == []
    assert sorted(set(spec.methods) - keys) == []
    assert sorted(p for p in spec.packages if not any(m.package == p for m in methods)) == []


def test_internal_only_methods_are_not_anonymous() -> None:
    spec = EdgeSpec.load(ROUTES)
    for m in load_methods(DESCRIPTORS):
        if m.key in spec.internal_only:
            assert not any(spec.is_anonymous(m, rule) for rule in m.rules), m.key
