"""The gRPC servicer: authorisation by scope, messages <-> use cases. Nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from google.longrunning import operations_proto_pb2
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc

from services.common import workload_identity
from services.common.auth import Principal, current_principal
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.identifiers import require_pid
from services.common.interceptors import validate_message
from services.common.internal_methods import (
    CERTIFICATE_CREDENTIAL,
    certificate_is_credential,
    internal_methods_of,
)
from services.common.tokens import Scopes
from services.masterdata.domain.model import CheckReason, Practitioner
from services.masterdata.entrypoints import convert
from services.masterdata.service_layer.import_jobs import MAX_FILE_BYTES, ImportJobs
from services.masterdata.service_layer.importing import ImportOutcome
from services.masterdata.service_layer.services import MasterData

FULL_NAME = "samhandling.masterdata.v1.MasterDataService"
# Declared with their allowed callers in services/common/internal_methods.py.
INTERNAL_METHODS = internal_methods_of(FULL_NAME)
# Internal methods some workload may call with its certificate alone (no token required by
# the call pipeline; the handler asks the others for one).
TOKEN_OPTIONAL = frozenset(m for m in INTERNAL_METHODS if m in CERTIFICATE_CREDENTIAL)
_FORMATS = {pb.IMPORT_FORMAT_CSV: "csv", pb.IMPORT_FORMAT_JSON_LINES: "jsonl"}


def _reader() -> Principal:
    principal = current_principal()
    principal.require_scope(Scopes.MASTERDATA_READ, Scopes.MASTERDATA_ADMIN)
    return principal


def _admin() -> Principal:
    principal = current_principal()
    principal.require_scope(Scopes.MASTERDATA_ADMIN)
    return principal


def _is_admin(principal: Principal) -> bool:
    return principal.has_scope(Scopes.MASTERDATA_ADMIN)


def _import_reply(outcome: ImportOutcome, reply_type: Any) -> Any:
    return reply_type(
        committed=outcome.committed,
        imported_count=outcome.imported,
        skipped_count=outcome.skipped,
        errors=[
            pb.ImportRowError(line=e.line, field=e.field, reason=e.reason) for e in outcome.errors
        ],
    )


class MasterDataServicer(pb_grpc.MasterDataServiceServicer):
    def __init__(
        self,
        service: MasterData,
        heartbeat_seconds: float = 10.0,
        max_views: int = 50_000,
        jobs: ImportJobs | None = None,
    ) -> None:
        self.md = service
        self.jobs = jobs
        self.heartbeat_seconds = heartbeat_seconds
        # Rendered messages of cached practitioners, keyed by (HPR number, admin view) and
        # valid while the cache hands out the same (never mutated) domain object.
        self._views: dict[tuple[str, bool], tuple[Practitioner, pb.Practitioner]] = {}
        self._max_views = max_views

    def _practitioner(self, p: Practitioner, principal: Principal) -> pb.Practitioner:
        key = (p.hpr_number, _is_admin(principal))
        hit = self._views.get(key)
        if hit is not None and hit[0] is p:
            return hit[1]
        view = convert.practitioner_to_pb(p, self.md.catalog, include_pid=key[1])
        if len(self._views) >= self._max_views:
            self._views.clear()
        self._views[key] = (p, view)
        return view

    # --- practitioners --------------------------------------------------------------------
    def GetPractitioner(self, request: pb.GetPractitionerRequest, context: Any) -> pb.Practitioner:
        principal = _reader()
        return self._practitioner(self.md.get_practitioner(request.hpr_number), principal)

    def ListPractitioners(
        self, request: pb.ListPractitionersRequest, context: Any
    ) -> pb.ListPractitionersResponse:
        principal = _reader()
        page = self.md.list_practitioners(
            request.organisation, request.category, request.page_size, request.page_token
        )
        admin = _is_admin(principal)
        return pb.ListPractitionersResponse(
            practitioners=[
                convert.practitioner_to_pb(p, self.md.catalog, include_pid=admin)
                for p in page.items
            ],
            next_page_token=page.next_page_token,
        )

    def CreatePractitioner(
        self, request: pb.CreatePractitionerRequest, context: Any
    ) -> pb.Practitioner:
        principal = _admin()
        created = self.md.create_practitioner(convert.practitioner_from_pb(request.practitioner))
        return self._practitioner(created, principal)

    def UpdatePractitioner(
        self, request: pb.UpdatePractitionerRequest, context: Any
    ) -> pb.Practitioner:
        principal = _admin()
        updated = self.md.update_practitioner(
            convert.practitioner_from_pb(request.practitioner), list(request.update_mask.paths)
        )
        return self._practitioner(updated, principal)

    def SuspendApproval(self, request: pb.SuspendApprovalRequest, context: Any) -> pb.Practitioner:
        principal = _admin()
        changed = self.md.suspend_approval(
            request.hpr_number,
            request.category,
            request.reason,
            convert.from_ts(request, "suspended_until"),
        )
        return self._practitioner(changed, principal)

    def ReinstateApproval(
        self, request: pb.ReinstateApprovalRequest, context: Any
    ) -> pb.Practitioner:
        principal = _admin()
        changed = self.md.reinstate_approval(request.hpr_number, request.category, request.reason)
        return self._practitioner(changed, principal)

    def RevokeApproval(self, request: pb.RevokeApprovalRequest, context: Any) -> pb.Practitioner:
        principal = _admin()
        changed = self.md.revoke_approval(request.hpr_number, request.category, request.reason)
        return self._practitioner(changed, principal)

    def ImportPractitioners(
        self, request: pb.ImportPractitionersRequest, context: Any
    ) -> pb.ImportPractitionersResponse:
        _admin()
        outcome = self.md.import_practitioners(
            request.data,
            _FORMATS[request.format],
            request.partial,
            request.validate_only,
            convert.practitioner_from_json,
        )
        return _import_reply(outcome, pb.ImportPractitionersResponse)  # type: ignore[no-any-return]

    def CheckPractitionerApproval(
        self, request: pb.CheckPractitionerApprovalRequest, context: Any
    ) -> pb.CheckPractitionerApprovalResponse:
        current_principal()  # internal: any authenticated mesh caller
        answer, position = self.md.check_approval(
            request.hpr_number,
            request.category,
            convert.from_ts(request, "time"),
            request.national_identity_number,
        )
        p = answer.practitioner
        at = convert.from_ts(request, "time") or self.md.clock()
        return pb.CheckPractitionerApprovalResponse(
            valid=answer.valid,
            reason=convert.check_reason_to_pb(answer.reason),  # type: ignore[arg-type]
            approvals=[convert.approval_to_pb(a) for a in p.approvals] if p else [],
            org_numbers=list(answer.org_numbers),
            practitioner_name=p.display_name if p else "",
            hpr_number=request.hpr_number,
            position=position,
            valid_categories=sorted(
                {a.category for a in p.approvals if a.state_at(at) == CheckReason.VALID}
            )
            if p
            else [],
        )

    def FindPractitionerByIdentity(
        self, request: pb.FindPractitionerByIdentityRequest, context: Any
    ) -> pb.FindPractitionerByIdentityResponse:
        current_principal()  # internal: the trust service (services/common/internal_methods.py)
        found = self.md.hpr_number_for(request.national_identity_number)
        return pb.FindPractitionerByIdentityResponse(hpr_number=found or "")

    def CheckGpList(self, request: pb.CheckGpListRequest, context: Any) -> pb.CheckGpListResponse:
        method = f"/{FULL_NAME}/CheckGpList"
        if not certificate_is_credential(method, workload_identity.current_peer()):
            current_principal()  # internal: privacy forwards the end user's token
        require_pid(request.patient_id, "patient_id")
        return pb.CheckGpListResponse(
            listed=self.md.on_gp_list(request.hpr_number, request.patient_id)
        )

    # --- organisations --------------------------------------------------------------------
    def GetOrganization(self, request: pb.GetOrganizationRequest, context: Any) -> pb.Organization:
        _reader()
        return convert.organization_to_pb(
            self.md.get_organization(request.org_number), self.md.clock()
        )

    def ListOrganizations(
        self, request: pb.ListOrganizationsRequest, context: Any
    ) -> pb.ListOrganizationsResponse:
        _reader()
        page = self.md.list_organizations(
            request.parent,
            convert.kind_from_pb(request.kind),
            request.page_size,
            request.page_token,
        )
        now = self.md.clock()
        return pb.ListOrganizationsResponse(
            organizations=[convert.organization_to_pb(o, now) for o in page.items],
            next_page_token=page.next_page_token,
        )

    def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: Any
    ) -> pb.Organization:
        _admin()
        created = self.md.create_organization(convert.organization_from_pb(request.organization))
        return convert.organization_to_pb(created, self.md.clock())

    def UpdateOrganization(
        self, request: pb.UpdateOrganizationRequest, context: Any
    ) -> pb.Organization:
        _admin()
        incoming = convert.organization_from_pb(request.organization)
        paths = list(request.update_mask.paths)
        if request.organization.kind == 0 and (not paths or "kind" in paths or paths == ["*"]):
            incoming.kind = self.md.get_organization(incoming.org_number).kind
        updated = self.md.update_organization(incoming, paths)
        return convert.organization_to_pb(updated, self.md.clock())

    def ImportOrganizations(
        self, request: pb.ImportOrganizationsRequest, context: Any
    ) -> pb.ImportOrganizationsResponse:
        _admin()
        outcome = self.md.import_organizations(
            request.data,
            _FORMATS[request.format],
            request.partial,
            request.validate_only,
            convert.organization_from_json,
        )
        return _import_reply(outcome, pb.ImportOrganizationsResponse)  # type: ignore[no-any-return]

    # --- long-running imports (AIP-151) -----------------------------------------------------
    def _jobs(self) -> ImportJobs:
        if self.jobs is None:
            raise FailedPrecondition("long-running imports are off", reason="IMPORTS_OFF")
        return self.jobs

    def StartPractitionerImport(
        self, request: pb.StartPractitionerImportRequest, context: Any
    ) -> operations_proto_pb2.Operation:
        principal = _admin()
        return self._jobs().start(
            principal.client_id,
            pb.IMPORT_KIND_PRACTITIONERS,
            request.data,
            _FORMATS[request.format],
            request.validate_only,
        )

    def StartOrganizationImport(
        self, request: pb.StartOrganizationImportRequest, context: Any
    ) -> operations_proto_pb2.Operation:
        principal = _admin()
        return self._jobs().start(
            principal.client_id,
            pb.IMPORT_KIND_ORGANIZATIONS,
            request.data,
            _FORMATS[request.format],
            request.validate_only,
        )

    def UploadImport(
        self, request_iterator: Iterator[pb.UploadImportRequest], context: Any
    ) -> operations_proto_pb2.Operation:
        principal = _admin()
        first: pb.UploadImportRequest | None = None
        parts: list[bytes] = []
        size = 0
        for message in request_iterator:
            validate_message(message)
            first = first or message
            size += len(message.chunk)
            if size > MAX_FILE_BYTES:
                raise InvalidArgument(
                    f"the import file is larger than {MAX_FILE_BYTES} bytes",
                    reason="FILE_TOO_LARGE",
                )
            parts.append(message.chunk)
        if first is None or first.format not in _FORMATS:
            raise InvalidArgument(
                "the first message names the kind and format", reason="INVALID_UPLOAD"
            )
        return self._jobs().start(
            principal.client_id,
            first.kind,
            b"".join(parts),
            _FORMATS[first.format],
            first.validate_only,
        )

    def GetImportOperation(
        self, request: pb.GetImportOperationRequest, context: Any
    ) -> operations_proto_pb2.Operation:
        principal = _admin()
        return self._jobs().get(principal.client_id, request.name)

    # --- code systems ---------------------------------------------------------------------
    def ListCodeSystems(
        self, request: pb.ListCodeSystemsRequest, context: Any
    ) -> pb.ListCodeSystemsResponse:
        _reader()
        return pb.ListCodeSystemsResponse(
            code_systems=[
                pb.CodeSystem(id=s.id, system=s.system, title=s.title, code_count=len(s.codes))
                for s in self.md.catalog.systems
            ]
        )

    def ListCodes(self, request: pb.ListCodesRequest, context: Any) -> pb.ListCodesResponse:
        _reader()
        system, page = self.md.list_codes(
            request.code_system, request.page_size, request.page_token
        )
        return pb.ListCodesResponse(
            codes=[
                pb.Code(
                    system=system.system,
                    code=system.codes[i].code,
                    display=system.codes[i].display,
                    active=system.codes[i].active,
                )
                for i in page.items
            ],
            next_page_token=page.next_page_token,
            total_size=len(system.codes),
        )

    def ValidateCodes(
        self, request: pb.ValidateCodesRequest, context: Any
    ) -> pb.ValidateCodesResponse:
        current_principal()  # internal: any authenticated mesh caller
        checks = self.md.validate_codes([(c.system, c.code) for c in request.codes])
        return pb.ValidateCodesResponse(
            results=[
                pb.CodeValidation(
                    valid=c.valid,
                    system=c.system,
                    code=c.code,
                    display=c.display,
                    reason=c.reason,
                )
                for c in checks
            ],
            all_valid=all(c.valid for c in checks),
        )

    # --- change events --------------------------------------------------------------------
    def WatchChanges(
        self, request: pb.WatchChangesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchChangesResponse]:
        method = f"/{FULL_NAME}/WatchChanges"
        if not certificate_is_credential(method, workload_identity.current_peer()):
            current_principal()  # internal: the subscriber's own token
        feed = self.md.feed
        types = [convert.resource_type_from_pb(t) for t in request.resource_types if t]
        position = feed.head if request.from_now else request.after_position
        yield pb.WatchChangesResponse(head_position=feed.head)  # the stream is open
        idle = 0.0
        while context.is_active() and not feed.stopped:
            head = feed.head
            events = self.md.events_after(position, 500, types)
            if events:
                position = events[-1].position
                idle = 0.0
                yield pb.WatchChangesResponse(
                    events=[convert.event_to_pb(e) for e in events],
                    head_position=max(head, position),
                )
                if len(events) == 500:
                    continue
            # Everything up to `head` that matches was sent (outbox writers commit in order).
            position = max(position, head)
            if feed.wait_beyond(position, min(1.0, self.heartbeat_seconds)):
                continue
            idle += min(1.0, self.heartbeat_seconds)
            if idle >= self.heartbeat_seconds:
                idle = 0.0
                yield pb.WatchChangesResponse(head_position=feed.head)
