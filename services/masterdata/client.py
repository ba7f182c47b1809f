"""Client for the services that lean on master data (trust, privacy, results, documents).

    from services.masterdata.client import MasterDataClient
    masterdata = MasterDataClient()  # channel from SAMHANDLING_MASTERDATA_ADDR
    answer = masterdata.check_approval("1000001", "LE", metadata=principal.forwarding_metadata())
    masterdata.start_watch(on_change=my_cache.invalidate)  # optional: push invalidation

Answers for "now" are cached per (HPR number, category) for `ttl_seconds`; with a watch
running, a change event for the practitioner drops the entry at once (the master data
service streams its outbox), so a suspension takes effect within moments even with a long
TTL. ValidateCodes answers are cached for good (code systems change with releases only).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence

import grpc
from google.protobuf import timestamp_pb2
from samhandling.masterdata.v1 import masterdata_service_pb2 as pb
from samhandling.masterdata.v1 import masterdata_service_pb2_grpc as pb_grpc
from samhandling.masterdata.v1 import population_service_pb2 as population_pb
from samhandling.masterdata.v1 import population_service_pb2_grpc as population_grpc

from services.common.errors import Unavailable, peer_error

log = logging.getLogger("samhandling.masterdata.client")
Metadata = Sequence[tuple[str, str]]
CODE_BATCH = 1000  # pairs per ValidateCodes call


def masterdata_error(error: grpc.RpcError, message: str = "master data unavailable") -> Exception:
    """The one mapping of a failed master data call (services/common `peer_error`): only
    UNAVAILABLE / DEADLINE_EXCEEDED become MASTERDATA_UNAVAILABLE; a refusal stays a refusal."""
    return peer_error(error, Unavailable(message, reason="MASTERDATA_UNAVAILABLE"))


class MasterDataClient:
    def __init__(
        self,
        channel: grpc.Channel | Callable[[], grpc.Channel] | None = None,
        ttl_seconds: float = 30.0,
        max_entries: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self.ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._approvals: collections.OrderedDict[
            tuple[str, str], tuple[float, pb.CheckPractitionerApprovalResponse]
        ] = collections.OrderedDict()
        self._codes: dict[tuple[str, str], pb.CodeValidation] = {}
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self.position = 0  # last change event seen by the watch
        self.streams_opened = 0

    def _target(self) -> grpc.Channel:
        from services.common.clients import service_channel

        if self._channel is None:
            return service_channel("masterdata")
        return self._channel() if callable(self._channel) else self._channel

    @property
    def stub(self) -> pb_grpc.MasterDataServiceStub:
        from services.common.clients import stub

        return stub(pb_grpc.MasterDataServiceStub, self._target())

    @property
    def population(self) -> population_grpc.PopulationServiceStub:
        from services.common.clients import stub

        return stub(population_grpc.PopulationServiceStub, self._target())

    # --- approvals ------------------------------------------------------------------------
    def check_approval(
        self,
        hpr_number: str,
        category: str = "",
        at: dt.datetime | None = None,
        metadata: Metadata = (),
        timeout: float | None = None,
        national_identity_number: str = "",
    ) -> pb.CheckPractitionerApprovalResponse:
        """Does the practitioner hold a valid approval of `category` ('' = any) at `at`
        (default now), and where does he or she work? With `national_identity_number`, valid
        only if the practitioner is that person (IDENTITY_MISMATCH). Cached when neither `at`
        nor the identity number is given. Failures raise `masterdata_error`."""
        request = pb.CheckPractitionerApprovalRequest(
            hpr_number=hpr_number,
            category=category,
            national_identity_number=national_identity_number,
        )
        if at is not None or national_identity_number:
            if at is not None:
                stamp = timestamp_pb2.Timestamp()
                stamp.FromDatetime(at)
                request.time.CopyFrom(stamp)
            return self._approval(request, metadata, timeout)
        key = (hpr_number, category)
        now = self._clock()
        with self._lock:
            hit = self._approvals.get(key)
            if hit is not None and hit[0] > now:
                self._approvals.move_to_end(key)
                return hit[1]
        answer = self._approval(request, metadata, timeout)
        with self._lock:
            if self.ttl > 0 and answer.position >= self.position:  # not older than the watch
                self._approvals[key] = (now + self.ttl, answer)
                if len(self._approvals) > self._max:
                    self._approvals.popitem(last=False)
        return answer

    def _approval(
        self,
        request: pb.CheckPractitionerApprovalRequest,
        metadata: Metadata,
        timeout: float | None,
    ) -> pb.CheckPractitionerApprovalResponse:
        try:
            return self.stub.CheckPractitionerApproval(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise masterdata_error(exc) from exc

    def hpr_number_for(
        self, national_identity_number: str, metadata: Metadata = (), timeout: float | None = None
    ) -> str | None:
        """The HPR number of the health worker with this identity number (None if none);
        internal, for the trust service after a federated login. Not cached."""
        try:
            reply = self.stub.FindPractitionerByIdentity(
                pb.FindPractitionerByIdentityRequest(
                    national_identity_number=national_identity_number
                ),
                metadata=metadata,
                timeout=timeout,
            )
        except grpc.RpcError as exc:
            raise masterdata_error(exc) from exc
        return reply.hpr_number or None

    # --- organisations ----------------------------------------------------------------------
    def get_organization(
        self, org_number: str, metadata: Metadata = (), timeout: float | None = None
    ) -> pb.Organization | None:
        """The organisation, None when master data does not know it (NOT_FOUND). Not cached."""
        try:
            return self.stub.GetOrganization(
                pb.GetOrganizationRequest(org_number=org_number), metadata=metadata, timeout=timeout
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                return None
            raise masterdata_error(exc) from exc

    def list_organizations(
        self, parent: str, metadata: Metadata = (), timeout: float | None = None
    ) -> list[pb.Organization]:
        """Every direct child of `parent`, all pages (500 a page). Not cached."""
        out: list[pb.Organization] = []
        token = ""
        while True:
            try:
                page = self.stub.ListOrganizations(
                    pb.ListOrganizationsRequest(parent=parent, page_size=500, page_token=token),
                    metadata=metadata,
                    timeout=timeout,
                )
            except grpc.RpcError as exc:
                raise masterdata_error(exc) from exc
            out.extend(page.organizations)
            token = page.next_page_token
            if not token:
                return out

    def invalidate(self, hpr_number: str | None = None) -> None:
        with self._lock:
            if hpr_number is None:
                self._approvals.clear()
            else:
                for key in [k for k in self._approvals if k[0] == hpr_number]:
                    del self._approvals[key]

    # --- GP lists -------------------------------------------------------------------------
    def check_gp_list(
        self,
        hpr_number: str,
        patient_id: str,
        metadata: Metadata = (),
        timeout: float | None = 3.0,
    ) -> bool:
        """Is the patient on the practitioner's GP list now? (Never says who the GP is.)
        Not cached: a list change counts from the next call."""
        try:
            reply = self.stub.CheckGpList(
                pb.CheckGpListRequest(hpr_number=hpr_number, patient_id=patient_id),
                metadata=metadata,
                timeout=timeout,
            )
        except grpc.RpcError as exc:
            raise masterdata_error(exc, "master data is unavailable") from exc
        return bool(reply.listed)

    # --- codes ----------------------------------------------------------------------------
    def validate_codes(
        self,
        pairs: Sequence[tuple[str, str]],
        metadata: Metadata = (),
        timeout: float | None = None,
    ) -> list[pb.CodeValidation]:
        """One CodeValidation per (system, code), in order; asks only about unseen pairs."""
        missing = [p for p in dict.fromkeys(pairs) if p not in self._codes]
        if missing:
            try:
                reply = self.stub.ValidateCodes(
                    pb.ValidateCodesRequest(
                        codes=[pb.CodeRef(system=s, code=c) for s, c in missing]
                    ),
                    metadata=metadata,
                    timeout=timeout,
                )
            except grpc.RpcError as exc:
                raise masterdata_error(exc) from exc
            for pair, result in zip(missing, reply.results, strict=True):
                self._codes[pair] = result
        return [self._codes[p] for p in pairs]

    def invalid_codes(
        self,
        pairs: Sequence[tuple[str, str]],
        metadata: Metadata = (),
        timeout: float | None = None,
        unavailable: str = "master data could not check the codes; try again",
    ) -> dict[tuple[str, str], str]:
        """(system, code) -> reason for every pair that is not valid. Not cached (callers
        choose their own policy); asked in batches of CODE_BATCH; a failure raises
        `masterdata_error` (MASTERDATA_UNAVAILABLE with `unavailable` as its message)."""
        unique = list(dict.fromkeys(pairs))
        invalid: dict[tuple[str, str], str] = {}
        for start in range(0, len(unique), CODE_BATCH):
            chunk = unique[start : start + CODE_BATCH]
            try:
                reply = self.stub.ValidateCodes(
                    pb.ValidateCodesRequest(codes=[pb.CodeRef(system=s, code=c) for s, c in chunk]),
                    metadata=metadata,
                    timeout=timeout,
                )
            except grpc.RpcError as exc:
                raise masterdata_error(exc, unavailable) from exc
            for pair, result in zip(chunk, reply.results, strict=True):
                if not result.valid:
                    invalid[pair] = result.reason or "UNKNOWN_CODE"
        return invalid

    # --- push invalidation ------------------------------------------------------------------
    def start_watch(
        self,
        metadata: Callable[[], Metadata] = lambda: (),
        retry_seconds: float = 1.0,
        stream_seconds: float = 3600.0,
        on_change: Callable[[str | None], None] | None = None,
        max_retry_seconds: float = 30.0,
    ) -> None:
        """Follow the change stream of practitioners in a daemon thread (from now on),
        dropping cache entries of changed practitioners; `on_change(hpr_number)` tells a
        caller's own cache too (None: drop everything, the feed cannot vouch for it: at
        start, after an outbox reset, while the stream is broken). Each stream lives
        `stream_seconds` (a deadline is always set); it then reconnects and resumes after
        the last position, missing nothing. A broken stream is retried after
        `retry_seconds`, doubling up to `max_retry_seconds` until a stream opens again.
        `metadata`: the subscriber's token, if any (privacy's certificate is its credential,
        services/common/internal_methods.py CERTIFICATE_CREDENTIAL)."""

        def changed(hpr_number: str | None) -> None:
            self.invalidate(hpr_number)
            if on_change is not None:
                on_change(hpr_number)

        def run() -> None:
            first = True
            delay = retry_seconds
            while not self._stop.is_set():
                try:
                    request = pb.WatchChangesRequest(
                        from_now=first,
                        after_position=self.position,
                        resource_types=[pb.RESOURCE_TYPE_PRACTITIONER],
                    )
                    stream = self.stub.WatchChanges(
                        request, metadata=metadata(), timeout=stream_seconds
                    )
                    self._stream = stream
                    self.streams_opened += 1
                    for batch in stream:
                        delay = retry_seconds  # the stream is open: the backoff starts over
                        if first or batch.head_position < self.position:
                            # Start, or the outbox was reset: trust nothing cached before.
                            self.position = batch.head_position
                            changed(None)
                            first = False
                        for event in batch.events:
                            changed(event.resource_key)
                            self.position = event.position
                        if self._stop.is_set():
                            return
                except grpc.RpcError as error:
                    if self._stop.is_set():
                        return
                    if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
                        continue  # the stream's planned end: resume at once
                    log.warning("master data watch interrupted: %s", error.code())  # type: ignore[attr-defined]
                # Broken or ended: events may be missed until it is back, so nothing cached
                # is vouched for (the next stream resumes after `position` and misses none).
                changed(None)
                self._stop.wait(delay)
                delay = min(delay * 2, max_retry_seconds)

        self._watch = threading.Thread(target=run, name="masterdata-watch", daemon=True)
        self._watch.start()

    # --- population register (internal, privacy only) -----------------------------------
    def get_family(
        self, person_id: str, metadata: Metadata, timeout: float | None = None
    ) -> population_pb.Family | None:
        """The person with parents and children (birth dates from the identity numbers), or
        None when the register does not know him. Not cached here (privacy caches briefly);
        any other failure raises `masterdata_error`."""
        try:
            return self.population.GetFamily(
                population_pb.GetFamilyRequest(person_id=person_id),
                metadata=metadata,
                timeout=timeout or 2.0,
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                return None
            raise masterdata_error(exc) from exc

    def close(self) -> None:
        self._stop.set()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.cancel()
        if self._watch is not None:
            self._watch.join(5)
