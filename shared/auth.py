"""Bearer tokens every service can check on its own: JWTs signed with HRTRACK_TOKEN_SECRET."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ALGORITHM = "HS256"
ISSUER = "hrtrack"


class Role(StrEnum):
    COORDINATOR = "coordinator"
    AGENCY = "agency"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    agency_id: uuid.UUID | None = None

    @property
    def is_coordinator(self) -> bool:
        return self.role is Role.COORDINATOR

    def may_access_agency(self, agency_id: uuid.UUID) -> bool:
        return self.is_coordinator or self.agency_id == agency_id


class TokenError(Exception):
    pass


def create_token(
    secret: str,
    role: Role,
    *,
    agency_id: uuid.UUID | None = None,
    subject: str | None = None,
    ttl: timedelta = timedelta(days=90),
) -> str:
    if not secret:
        raise TokenError("no token secret configured (HRTRACK_TOKEN_SECRET)")
    if role is Role.AGENCY and agency_id is None:
        raise TokenError("an agency token needs an agency id")
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": subject or (f"agency:{agency_id}" if agency_id else "coordinator"),
        "role": role.value,
        "iat": now,
        "exp": now + ttl,
    }
    if agency_id is not None:
        claims["agency_id"] = str(agency_id)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> Principal:
    if not secret:
        raise TokenError("token checking is not configured")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "iat", "role", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    try:
        role = Role(claims["role"])
        agency = uuid.UUID(claims["agency_id"]) if claims.get("agency_id") else None
    except (ValueError, KeyError) as exc:
        raise TokenError("invalid token claims") from exc
    if role is Role.AGENCY and agency is None:
        raise TokenError("agency token without agency id")
    return Principal(subject=str(claims["sub"]), role=role, agency_id=agency)


_bearer = HTTPBearer(auto_error=False, description="hrtrack token (`hrtrack tokens create`)")


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing bearer token (Authorization: Bearer TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    secret: str = request.app.state.token_secret
    try:
        return decode_token(secret, credentials.credentials)
    except TokenError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc


def require_coordinator(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.is_coordinator:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="coordinator token required")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
Coordinator = Annotated[Principal, Depends(require_coordinator)]
