"""protovalidate rules from the protos, as the call pipeline applies them."""

import pytest
from samhandling.masterdata.v1 import masterdata_service_pb2 as md

from services.common.errors import InvalidArgument
from services.common.interceptors import validate_message


def test_a_message_level_rule_is_invalid_argument_with_the_rules_message() -> None:
    # CreateOrganizationRequest's rule `organization.required` has no field path.
    request = md.CreateOrganizationRequest(organization=md.Organization(org_number="999999999"))
    with pytest.raises(InvalidArgument) as err:
        validate_message(request)
    assert "name and kind are required" in err.value.message
    assert [v.description for v in err.value.violations] == ["name and kind are required"]


def test_a_field_rule_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_message(md.CreateOrganizationRequest())
    assert "organization" in [v.field for v in err.value.violations]
