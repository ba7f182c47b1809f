"""The privacy service as the trust service sees it: the representation check at token
exchange (internal `RepresentationService.CheckRepresentation`, with the acting citizen's
own token forwarded as user context), through services/privacy/client.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from services.common.errors import DomainError, Unavailable
from services.trust.service_layer.representation import (
    RepresentationAnswer,
    RepresentationRefused,
    RepresentationUnavailable,
)


class GrpcRepresentations:
    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self._client: Any = None

    def check(self, subject_token: str, representation_id: str) -> RepresentationAnswer:
        from samhandling.privacy.v1 import representation_service_pb2 as pb

        if self._client is None:
            self._client = self._factory()
        try:
            reply = self._client.check_representation(representation_id, subject_token)
        except Unavailable as exc:
            raise RepresentationUnavailable(str(exc)) from exc
        except DomainError as exc:  # a refusal (PERMISSION_DENIED, a revoked token, ...)
            raise RepresentationRefused(exc.reason or "REPRESENTATION_NOT_VALID") from exc
        except Exception as exc:  # anything else from the peer: fail closed, say why
            raise RepresentationUnavailable(type(exc).__name__) from exc
        valid_until = (
            reply.valid_until.ToDatetime(tzinfo=dt.UTC) if reply.HasField("valid_until") else None
        )
        return RepresentationAnswer(
            patient_id=reply.patient_id,
            relation=pb.RepresentationRelation.Name(reply.relation),
            scope=pb.RepresentationScope.Name(reply.scope),
            valid_until=valid_until,
            display_name=reply.display_name,
        )
