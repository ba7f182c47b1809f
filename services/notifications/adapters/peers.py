"""What the notifications service asks other services before a notification is made:
master data (is the patient on the GP's list, `CheckGpList` through
services/masterdata/client.py) and privacy (may this recipient be told,
`CheckNotificationAccess` through services/privacy/client.py). Both are called with this
workload's certificate alone (services/common/internal_methods.py CERTIFICATE_CREDENTIAL):
there is no end user at hand when an event arrives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc

from services.notifications.domain.model import DOMAIN_OF_TOPIC, Event, Subscription


class Peers(Protocol):
    def on_gp_list(self, hpr_number: str, patient_id: str) -> bool: ...

    def may_notify(self, pairs: Sequence[tuple[Subscription, Event]]) -> list[bool]: ...


class MeshPeers:
    def __init__(
        self,
        masterdata_channel: grpc.Channel | None = None,
        privacy_channel: grpc.Channel | None = None,
    ) -> None:
        from services.masterdata.client import MasterDataClient
        from services.privacy.client import PrivacyClient

        self.masterdata = MasterDataClient(masterdata_channel)
        self.privacy = PrivacyClient(privacy_channel)

    def on_gp_list(self, hpr_number: str, patient_id: str) -> bool:
        return self.masterdata.check_gp_list(hpr_number, patient_id)  # errors mapped there

    def may_notify(self, pairs: Sequence[tuple[Subscription, Event]]) -> list[bool]:
        from samhandling.privacy.v1 import privacy_service_pb2 as pv

        from services.privacy.client import check_notifications

        domains = {"RESULTS": pv.DOMAIN_RESULTS, "DOCUMENTS": pv.DOMAIN_DOCUMENTS}
        checks = [
            pv.NotificationCheck(
                patient_id=event.patient_id,
                domain=domains.get(DOMAIN_OF_TOPIC[sub.topic], pv.DOMAIN_PRIVACY),
                recipient_pid=sub.subscriber.pid,
                recipient_hpr_number=sub.subscriber.hpr_number,
                recipient_org_numbers=list(sub.subscriber.org_numbers),
                recipient_department=sub.subscriber.department,
            )
            for sub, event in pairs
        ]
        answers: list[bool] = []
        for start in range(0, len(checks), 1000):
            answers += [
                a for a, _ in check_notifications(self.privacy, checks[start : start + 1000])
            ]
        return answers
