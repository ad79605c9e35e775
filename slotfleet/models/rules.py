"""Validation rules of the Queue resource, each written once for two checkers.

The API server checks a Queue against the CRD's OpenAPI schema and its CEL rules
(``x-kubernetes-validations``); ``slotfleet fleet -f queue.yaml`` checks the same
manifest with pydantic. A rule here is one object that yields both: the CEL text for the
schema and a Python check for the model, with one message. Where the logic is a regular
expression it is literally shared (RE2 in the API server, :mod:`re` here: the patterns
use only the syntax both agree on: ASCII classes, no look-around, no ``\\w``). Rules whose
logic CEL and Python spell differently (reserved names, quantities) keep both spellings
side by side here, and ``tests/unit/test_queue_validation.py`` and
``tests/kube/test_queue_validation.py`` run one table of invalid manifests through both.

What this module is not: it knows nothing of Queues' meaning; the models in
``slotfleet.models.resource`` and ``slotfleet.models.pod`` attach these rules to fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Json = dict[str, Any]


class SpecModel(BaseModel):
    """Base of the Queue's spec models: camelCase names as in Kubernetes, unknown fields
    refused, field docstrings as descriptions (``kubectl explain``)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        use_attribute_docstrings=True,
        alias_generator=to_camel,
    )


def cel(rule: str, message: str, *, field_path: str | None = None) -> Json:
    """One ``x-kubernetes-validations`` entry; ``field_path`` (``.name``) points the
    API server's error at a field below the object the rule sits on."""
    entry: Json = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def cel_extra(*rules: Json) -> Json:
    """``json_schema_extra`` carrying CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


@dataclass(frozen=True, slots=True)
class OwnedFields:
    """Fields of a model that the operator sets: declared (typed, or a CEL rule could not
    see them, and a structural schema would prune them without a word) only to be
    refused, each with why and what to do instead."""

    why: dict[str, str]
    """Field name (camelCase, as in the manifest) -> the reason after "is set by the
    operator: "."""

    def message(self, field: str) -> str:
        return f"{field} is set by the operator: {self.why[field]}"

    def cel(self) -> list[Json]:
        return [
            cel(f"!has(self.{field})", self.message(field), field_path=f".{field}")
            for field in self.why
        ]

    def check(self, model: BaseModel) -> None:
        """Raise the message of the first owned field ``model`` sets."""
        for name, info in type(model).model_fields.items():
            if info.alias in self.why and getattr(model, name) is not None:
                raise ValueError(self.message(info.alias))


@dataclass(frozen=True, slots=True)
class PatternRule:
    """A string that must match ``pattern`` completely, with one message for both checkers."""

    pattern: str
    """The expression without anchors (both checkers anchor it)."""
    message: str

    def cel(self) -> Json:
        # a raw CEL string: the pattern's backslashes reach RE2 as written
        if "'" in self.pattern:
            raise ValueError("a pattern rule may not contain a single quote")
        return cel(f"self.matches(r'^(?:{self.pattern})$')", self.message)

    def check(self, value: str) -> str:
        if re.fullmatch(self.pattern, value) is None:
            raise ValueError(self.message)
        return value


def bounds(rule: PatternRule, *, max_length: int, min_length: int = 1) -> Any:
    """The schema half of a string checked by ``rule``: ``Annotated[str, bounds(RULE,
    ...), AfterValidator(RULE.check)]`` is the whole type."""
    return Field(
        min_length=min_length, max_length=max_length, json_schema_extra=cel_extra(rule.cel())
    )


# ------------------------------------------------------------------ names


_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*"

DNS_SUBDOMAIN = PatternRule(
    _DNS_SUBDOMAIN,
    "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting "
    "and ending with a letter or digit",
)
DNS_LABEL = PatternRule(
    _DNS_LABEL,
    "must be a DNS label: lowercase letters, digits and '-', starting and ending with a "
    "letter or digit",
)
SECRET_KEY = PatternRule(
    r"[-._a-zA-Z0-9]+",
    "must be a Secret or ConfigMap key: letters, digits, '-', '_' and '.'",
)
ENV_NAME = PatternRule(
    r"[-._a-zA-Z][-._a-zA-Z0-9]*",
    "must be an environment variable name: letters, digits, '_', '-' and '.', not "
    "starting with a digit",
)
MODULE_NAME = PatternRule(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*",
    "must be a Python module name such as myapp.tasks (dotted identifiers: no paths, "
    "spaces or $(VAR))",
)
LABEL_KEY = PatternRule(
    rf"(?:{_DNS_SUBDOMAIN}/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?",
    "label and annotation keys must be [prefix/]name: a name of at most 63 letters, "
    "digits, '-', '_' and '.' starting and ending with a letter or digit",
)
LABEL_VALUE = PatternRule(
    r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?",
    "label values must be at most 63 letters, digits, '-', '_' and '.', starting and "
    "ending with a letter or digit",
)

# An image reference as container runtimes parse it (distribution/reference, without
# IPv6 registry literals): [registry[:port]/]path[:tag][@digest]. Repository paths are
# lowercase; there is no scheme and no whitespace.
_DOMAIN_PART = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE = PatternRule(
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?",
    "image must be a reference such as registry.example.com/team/tasks:1.0 (a lowercase "
    "repository, no scheme such as https://, no spaces)",
)
ImageRef = Annotated[str, bounds(IMAGE, max_length=1024), AfterValidator(IMAGE.check)]
"""A container image reference."""


ObjectName = Annotated[
    str, bounds(DNS_SUBDOMAIN, max_length=253), AfterValidator(DNS_SUBDOMAIN.check)
]
"""The name of a Secret, ConfigMap or PriorityClass."""
KeyName = Annotated[str, bounds(SECRET_KEY, max_length=253), AfterValidator(SECRET_KEY.check)]
"""A key of a Secret or ConfigMap."""
LabelValue = Annotated[
    str, bounds(LABEL_VALUE, max_length=63, min_length=0), AfterValidator(LABEL_VALUE.check)
]
"""A label value (may be empty)."""
VolumeName = Annotated[str, bounds(DNS_LABEL, max_length=63), AfterValidator(DNS_LABEL.check)]
"""The name of a pod volume."""
EnvName = Annotated[str, bounds(ENV_NAME, max_length=253), AfterValidator(ENV_NAME.check)]
"""An environment variable name (or envFrom prefix)."""
ModuleName = Annotated[str, bounds(MODULE_NAME, max_length=512), AfterValidator(MODULE_NAME.check)]
"""A Python module name (``spec.imports``)."""


def cel_list(items: tuple[str, ...]) -> str:
    """A CEL list literal of strings (the items hold no quote)."""
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


# ------------------------------------------------------------------ quantities

#: A Kubernetes quantity: a signed decimal and a suffix (binary SI, decimal SI or an
#: exponent), as ``resource.ParseQuantity`` accepts it.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)
_SUFFIX = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

QUANTITY_MESSAGE = "must be a quantity such as 500m, 2 or 1Gi"
NEGATIVE_MESSAGE = "must not be negative"
REQUESTS_LE_LIMITS_MESSAGE = "resources: every request must be at most its limit"


def parse_quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity (``500m`` -> 0.5), or ``ValueError``."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(QUANTITY_MESSAGE)
    suffix = match.group("suffix") or ""
    try:
        number = Decimal(match.group("number"))
        if suffix[:1] in ("e", "E"):
            return number.scaleb(int(suffix[1:]))
        return number * _SUFFIX[suffix]
    except (InvalidOperation, OverflowError):
        raise ValueError(QUANTITY_MESSAGE) from None


def _quantity(text: str) -> str:
    if parse_quantity(text) < 0:
        raise ValueError(NEGATIVE_MESSAGE)
    return text


Quantity = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        json_schema_extra=cel_extra(
            cel("isQuantity(self)", QUANTITY_MESSAGE),
            cel("!isQuantity(self) || !quantity(self).isLessThan(quantity('0'))", NEGATIVE_MESSAGE),
        ),
    ),
    AfterValidator(_quantity),
]
"""A non-negative Kubernetes quantity (``500m``, ``2``, ``1Gi``)."""

#: requests <= limits for every resource named in both (CEL on ``resources``).
REQUESTS_LE_LIMITS = cel(
    "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits)"
    " || !isQuantity(self.requests[k]) || !isQuantity(self.limits[k])"
    " || quantity(self.requests[k]).compareTo(quantity(self.limits[k])) <= 0)",
    REQUESTS_LE_LIMITS_MESSAGE,
)
