"""Settings of ``slotfleet dashboard`` and ``slotfleet top``: where to listen, what to
show, and whether actions are allowed (and with which token).

Plain data checked at construction, so a bad flag is one clear line before anything
listens. Not a place for defaults of the store or the worker.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

#: Environment variable holding the action token (never a command-line flag: argv is
#: visible to every user of the machine in ``ps``).
TOKEN_ENV = "SLOTFLEET_DASHBOARD_TOKEN"

#: Shortest token accepted: a guessable token would make actions open to anyone who can
#: reach the port.
MIN_TOKEN_LENGTH = 16


class ViewSettings(BaseModel):
    """What the overview shows; shared by the web dashboard and ``top``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_seconds: Annotated[int, Field(ge=60, le=24 * 3600)] = 15 * 60
    """How far back the throughput chart and the failure rate look."""
    bucket_seconds: Annotated[int, Field(ge=5, le=3600)] = 30
    """Width of one bar of the throughput chart."""
    stale_after_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """A worker whose heartbeat is older than this is shown as stale (no longer counted
    in slots, as the store's queue figures do)."""
    forget_after_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = 600.0
    """Workers silent for longer than this are not shown at all."""

    @model_validator(mode="after")
    def _check(self) -> ViewSettings:
        if self.window_seconds % self.bucket_seconds:
            raise ValueError("the window must be a whole number of buckets")
        if self.window_seconds // self.bucket_seconds > 240:
            raise ValueError("at most 240 buckets fit the chart: widen the buckets")
        if self.forget_after_seconds < self.stale_after_seconds:
            raise ValueError("workers must be forgotten after they are stale, not before")
        return self


class DashboardSettings(BaseModel):
    """How ``slotfleet dashboard`` serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsn: str
    """The job store (never shown: pages name only its host and database)."""
    host: str = "127.0.0.1"
    """Address to listen on; the default is reachable from this machine only."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    """Port to listen on; 0 picks a free one (printed at start)."""
    refresh_seconds: Annotated[float, Field(ge=0.5, le=300)] = 2.0
    """How often open pages fetch fresh figures."""
    page_size: Annotated[int, Field(ge=1, le=500)] = 50
    """Jobs per page of the job list (the JSON API may ask for up to 500)."""
    actions: bool = False
    """Allow cancel, retry and purge. Off by default; when on, every action needs
    ``token``."""
    token: SecretStr | None = None
    """The bearer token actions require (from ``$SLOTFLEET_DASHBOARD_TOKEN`` or a file)."""
    view: ViewSettings = Field(default_factory=ViewSettings)
    """What the overview shows."""

    @model_validator(mode="after")
    def _check(self) -> DashboardSettings:
        if self.actions:
            secret = "" if self.token is None else self.token.get_secret_value()
            if not secret:
                raise ValueError(
                    f"actions need a token: set ${TOKEN_ENV} or pass --token-file "
                    "(or leave actions off)"
                )
            if len(secret) < MIN_TOKEN_LENGTH or secret != secret.strip():
                raise ValueError(
                    f"the action token must be at least {MIN_TOKEN_LENGTH} characters, "
                    "without surrounding spaces"
                )
        return self

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the address listened on."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
