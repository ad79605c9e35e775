"""The worker container's settings a Queue may give: env, envFrom, resources, mounts.

The operator owns the one container of a worker pod (its command, image, probes and
security context: ``slotfleet.operator.builders``); a Queue adds to it, in the shapes of a
pod spec, ``spec.env`` (``value`` or ``valueFrom``), ``spec.envFrom``, ``spec.resources``
and ``spec.volumeMounts``. What the operator sets wins, and a spec that tries to set it is
refused with a message naming it: the variables of :data:`OPERATOR_ENV` and the mount of
the writable ``/tmp``. Pod-level settings are in ``slotfleet.models.pod``.

What this module is not: it builds no manifest and knows no API server.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator

from slotfleet.models.rules import (
    REQUESTS_LE_LIMITS,
    REQUESTS_LE_LIMITS_MESSAGE,
    EnvName,
    KeyName,
    ObjectName,
    Quantity,
    SpecModel,
    VolumeName,
    cel,
    cel_extra,
    cel_list,
    parse_quantity,
)

#: Environment variables the operator sets on every worker (the DSN from the Secret, the
#: pod's identity from the downward API).
OPERATOR_ENV = ("SLOTFLEET_DSN", "POD_NAME", "POD_NAMESPACE", "POD_IP")
#: The writable /tmp of the read-only root filesystem (volume and mount).
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"

# ------------------------------------------------------------------ env


def reserved_env_message(name: str) -> str:
    return f"env {name} is set by the operator and cannot be overridden"


_RESERVED_ENV = cel(
    f"!(self.name in {cel_list(OPERATOR_ENV)})",
    reserved_env_message("SLOTFLEET_DSN, POD_NAME, POD_NAMESPACE or POD_IP"),
)
_RESERVED_ENV["messageExpression"] = (
    f"'{reserved_env_message('@').split('@')[0]}' + self.name + "
    f"'{reserved_env_message('@').split('@')[1]}'"
)


class KeySelector(SpecModel):
    """A key of a Secret or ConfigMap in the Queue's namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    key: KeyName
    """The key whose value is used."""
    optional: bool | None = None
    """Whether the pod starts without it."""


class FieldSelector(SpecModel):
    """A field of the pod (downward API), e.g. metadata.labels['team']."""

    field_path: Annotated[str, Field(min_length=1, max_length=256)]
    """Path of the field, e.g. spec.nodeName."""
    api_version: Annotated[str, Field(max_length=64)] | None = None
    """Schema version of the path (v1)."""


class ResourceSelector(SpecModel):
    """A resource request or limit of the worker container, e.g. limits.memory."""

    resource: Annotated[str, Field(min_length=1, max_length=253)]
    """requests.cpu, limits.memory, ..."""
    container_name: Annotated[str, Field(max_length=63)] | None = None
    """Only the worker container exists (worker)."""
    divisor: Quantity | None = None
    """Unit of the value, e.g. 1Mi."""


_ONE_SOURCE = cel(
    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
    "has(self.resourceFieldRef)].filter(x, x).size() == 1",
    "valueFrom must name exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
)


class EnvVarSource(SpecModel):
    """Where a variable's value comes from (exactly one source)."""

    model_config = ConfigDict(json_schema_extra=cel_extra(_ONE_SOURCE))

    secret_key_ref: KeySelector | None = None
    """A key of a Secret."""
    config_map_key_ref: KeySelector | None = None
    """A key of a ConfigMap."""
    field_ref: FieldSelector | None = None
    """A field of the pod."""
    resource_field_ref: ResourceSelector | None = None
    """A resource of the worker container."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        given = [self.secret_key_ref, self.config_map_key_ref, self.field_ref]
        if sum(x is not None for x in [*given, self.resource_field_ref]) != 1:
            raise ValueError(_ONE_SOURCE["message"])
        return self


_VALUE_OR_SOURCE = cel(
    "!(has(self.value) && has(self.valueFrom))",
    "an env entry has either value or valueFrom, not both",
)


class EnvVar(SpecModel):
    """An environment variable of the worker container, as in a pod spec."""

    model_config = ConfigDict(json_schema_extra=cel_extra(_RESERVED_ENV, _VALUE_OR_SOURCE))

    name: EnvName
    """Variable name."""
    value: Annotated[str, Field(max_length=32_768)] | None = None
    """Its value ($(OTHER) refers to a variable defined earlier, as in Kubernetes)."""
    value_from: EnvVarSource | None = None
    """Or where the value comes from: a Secret or ConfigMap key, a pod field or resource."""

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in OPERATOR_ENV:
            raise ValueError(reserved_env_message(name))
        return name

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(_VALUE_OR_SOURCE["message"])
        return self


class NamedRef(SpecModel):
    """A Secret or ConfigMap by name."""

    name: ObjectName
    """Its name."""
    optional: bool | None = None
    """Whether the pod starts without it."""


_ONE_ENV_SOURCE = cel(
    "has(self.secretRef) != has(self.configMapRef)",
    "envFrom entries name exactly one of secretRef, configMapRef",
)


class EnvFromSource(SpecModel):
    """Every key of a Secret or ConfigMap as environment variables (env wins)."""

    model_config = ConfigDict(json_schema_extra=cel_extra(_ONE_ENV_SOURCE))

    prefix: EnvName | None = None
    """Put before every key."""
    secret_ref: NamedRef | None = None
    """A Secret."""
    config_map_ref: NamedRef | None = None
    """A ConfigMap."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError(_ONE_ENV_SOURCE["message"])
        return self


# ------------------------------------------------------------------ resources


class Resources(SpecModel):
    """Requests and limits of the worker container, as in a pod spec."""

    model_config = ConfigDict(json_schema_extra=cel_extra(REQUESTS_LE_LIMITS))

    requests: dict[str, Quantity] | None = Field(default=None, max_length=32)
    """Amounts the scheduler reserves, e.g. cpu: 250m, memory: 256Mi."""
    limits: dict[str, Quantity] | None = Field(default=None, max_length=32)
    """Most the container may use, e.g. memory: 512Mi."""

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        for name, amount in (self.requests or {}).items():
            limit = (self.limits or {}).get(name)
            if limit is not None and parse_quantity(amount) > parse_quantity(limit):
                raise ValueError(REQUESTS_LE_LIMITS_MESSAGE)
        return self


# ------------------------------------------------------------------ volumes


_NOT_TMP_MOUNT = cel(
    f"self.mountPath != '{TMP_PATH}'",
    f"{TMP_PATH} is the operator's writable scratch volume; mount elsewhere",
    field_path=".mountPath",
)


class VolumeMount(SpecModel):
    """A volume of template.spec.volumes mounted into the worker container."""

    model_config = ConfigDict(json_schema_extra=cel_extra(_NOT_TMP_MOUNT))

    name: VolumeName
    """Name of the volume."""
    mount_path: Annotated[str, Field(min_length=1, max_length=1024)]
    """Where it appears in the container."""
    sub_path: Annotated[str, Field(max_length=1024)] | None = None
    """A path within the volume to mount instead of its root."""
    read_only: bool | None = None
    """Mount read-only."""

    @field_validator("mount_path")
    @classmethod
    def _not_tmp(cls, path: str) -> str:
        if path == TMP_PATH:
            raise ValueError(_NOT_TMP_MOUNT["message"])
        return path
