"""Fresh synthetic references per test (Cosmic Python's random_refs.py).

Each test makes its own patient and organisation, so no test sees another's data and the
suite passes in any order. The generator is seeded from the operating system: never pass a
constant seed to share a "fixed" patient between tests.
"""

from __future__ import annotations

import random

from services.common.identifiers import synthetic_org_number, synthetic_pid


def random_pid() -> str:
    """A synthetic identity number (+80 on the month) no other test uses."""
    return synthetic_pid(random.Random())


def random_org() -> str:
    """A synthetic organisation number no other test uses."""
    return synthetic_org_number(random.Random())
