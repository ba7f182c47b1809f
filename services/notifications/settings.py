"""The notifications service's settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.settings import CommonSettings, Env
from services.notifications.service_layer.services import WebhookPolicy

SERVICE = "notifications"
KEK_ENV = "SAMHANDLING_NOTIFICATIONS_KEY_ENCRYPTION_KEY"


@dataclass(frozen=True)
class Settings:
    # common.events.url (SAMHANDLING_EVENTS_URL) nats://...: consume the JetStream stream
    # (common.events.stream); empty: the data services call PublishEvents.
    common: CommonSettings = field(default_factory=lambda: CommonSettings.defaults(SERVICE))
    webhooks: WebhookPolicy = field(default_factory=WebhookPolicy)
    poll_seconds: float = 1.0  # how often the delivery loop looks for due notifications
    retention_days: float = 30.0  # delivered notifications and events are kept this long
    # `production`: the key-encryption key must be given (never generated under var/).
    mode: str = "dev"
    # Seals the webhook subscriptions' signing secrets at rest (base64url of 32 bytes).
    key_encryption_key: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        env = Env(environ)
        return cls(
            common=CommonSettings.from_env(SERVICE, environ),
            mode=env.mode(SERVICE),
            key_encryption_key=env.raw(KEK_ENV),
            webhooks=WebhookPolicy(
                base_seconds=env.seconds("SAMHANDLING_WEBHOOK_RETRY_BASE_SECONDS", 1.0),
                cap_seconds=env.seconds("SAMHANDLING_WEBHOOK_RETRY_CAP_SECONDS", 300.0),
                max_attempts=env.integer("SAMHANDLING_WEBHOOK_MAX_ATTEMPTS", 10, 1),
            ),
            poll_seconds=env.seconds("SAMHANDLING_NOTIFICATIONS_POLL_SECONDS", 1.0, 0.001),
            retention_days=env.number("SAMHANDLING_NOTIFICATIONS_RETENTION_DAYS", 30.0, 0.0),
        )

    @property
    def production(self) -> bool:
        return self.mode == "production"
