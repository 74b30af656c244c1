"""The tracker's HTTP API, for the few look-ups the events cannot answer in time.

Events on `agencies` carry every agency's contacts, but the two topics are not ordered with
each other: an assignment can arrive before its agency. Rather than telling the coordinators
that such an agency has no contact, a pass asks the tracker's directory first.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from shared.auth import Role, create_token

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgencyContactInfo:
    id: uuid.UUID
    name: str
    emails: list[str]
    language: str
    escalation_email: str | None
    needs_review: bool


class TrackerClient:
    def __init__(self, base_url: str, secret: str, *, timeout: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.timeout = timeout
        self.transport = transport  # tests hand in the tracker app itself (ASGI)

    def _token(self) -> str:
        # A short-lived coordinator token of its own, signed with the shared secret.
        return create_token(self.secret, Role.COORDINATOR, subject="service:notifier",
                            ttl=timedelta(minutes=5))

    async def agencies(self) -> list[AgencyContactInfo]:
        """The tracker's agency directory. Raises httpx.HTTPError when it cannot be read."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout,
                                     transport=self.transport) as client:
            response = await client.get("/v1/agencies",
                                        headers={"Authorization": f"Bearer {self._token()}"})
            response.raise_for_status()
            rows: list[dict[str, Any]] = response.json()
        return [AgencyContactInfo(
            id=uuid.UUID(str(r["id"])), name=str(r.get("name") or ""),
            emails=[str(e) for e in r.get("emails") or []], language=str(r.get("language") or "en"),
            escalation_email=r.get("escalation_email") or None,
            needs_review=bool(r.get("needs_review"))) for r in rows]
