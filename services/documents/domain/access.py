"""Which patient a call is about, from the caller's token (API.md: rules for patient data).

Whether the caller may see that patient at all (a citizen asking for someone else, a
practitioner outside the attested care relationship) is the privacy service's decision, so
that the denial is logged too.
"""

from __future__ import annotations

from services.common.auth import Principal
from services.common.errors import invalid_field
from services.common.identifiers import require_pid


def resolve_patient(principal: Principal, patient_id: str, field: str = "patient_id") -> str:
    """The patient a call is about: a citizen defaults to himself, others must name one."""
    if principal.is_citizen and not patient_id:
        return str(principal.pid)
    if not patient_id:
        raise invalid_field(field, "required", reason="PATIENT_ID_REQUIRED")
    require_pid(patient_id, field)
    return patient_id
