"""Parse and validate a DistCluster's `spec` into a typed, immutable `ClusterSpec`.

The API server applies the CRD's defaults and CEL rules before the operator sees a
resource, but the operator must not rely on that: the `kmock` API mock used in tests runs
neither, and a resource stored before a schema change may predate a rule. So `parse_spec`
applies the same defaults (the constants of `crd.py`) and checks everything the CRD
checks, plus what Kubernetes would only refuse later, when the StatefulSet or a pod is
created (requests above limits, toleration combinations), so that a bad spec is refused
before anything is built rather than half-way through.

Every problem becomes one sentence naming the field by its path in the resource
(`spec.replicas must be odd for role lock_manager, got 4.`); `SpecError.message` joins
them, ready for a Degraded condition and a Kubernetes Event.

Pure: no I/O and no clock, so the operator's handlers and the tests share it as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from distcluster_operator import crd

Role = Literal["lock_manager", "queue", "cache"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]

_QUANTITY_RE = re.compile(crd.QUANTITY_PATTERN)
_SETTING_RE = re.compile(crd.SETTING_NAME_PATTERN)
_NAME_RE = re.compile(crd.NAME_PATTERN)
_DNS_SUBDOMAIN_RE = re.compile(crd.DNS_SUBDOMAIN_PATTERN)
_SECRET_KEY_RE = re.compile(crd.SECRET_KEY_PATTERN)
_IMAGE_RE = re.compile(crd.IMAGE_PATTERN)

# Multipliers of the Kubernetes quantity suffixes, for comparing requests with limits.
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


class SpecError(ValueError):
    """The spec is invalid. `message` is one or more sentences, `problems` one per problem."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems if problems is not None else [message]


def _quantity(value: Any) -> str:
    """Accept what the CRD's int-or-string quantity accepts; return it as a string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be a quantity such as 500m, 1Gi or 2, got {_show(value)}")
    text = str(value)
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"must be a quantity such as 500m, 1Gi or 2, got {_show(value)}")
    return text


def quantity_value(text: str) -> Decimal:
    """The number a Kubernetes quantity string stands for (`"1Gi"` -> 1073741824)."""
    match = re.fullmatch(r"([+-]?[0-9.]+)([eE][+-]?[0-9.]+)?([a-zA-Z]*)", text)
    if match is None or match.group(3) not in _SUFFIXES:
        raise ValueError(f"{text!r} is not a quantity")
    number, exponent, suffix = match.groups()
    try:
        return Decimal(number + (exponent or "")) * _SUFFIXES[suffix]
    except InvalidOperation as exc:
        raise ValueError(f"{text!r} is not a quantity") from exc


def _matching(pattern: re.Pattern[str], rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"must be {rule}, got {_show(value)}")
        return value

    return AfterValidator(check)


Quantity = Annotated[str, BeforeValidator(_quantity)]
DnsSubdomain = Annotated[
    str,
    Field(min_length=1, max_length=253),
    _matching(_DNS_SUBDOMAIN_RE, "a DNS subdomain (lower-case letters, digits, '-' and '.')"),
]
Image = Annotated[
    str, Field(min_length=1, max_length=512), _matching(_IMAGE_RE, "an image without spaces")
]


class _Model(BaseModel):
    """Field names in snake_case, read from the resource's camelCase; unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, alias_generator=to_camel)


class Resources(_Model):
    """Container resources: quantities by resource name, as in a container spec."""

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        problems = [
            f"must not request more {name} ({self.requests[name]}) than its limit "
            f"({self.limits[name]})"
            for name in sorted(set(self.requests) & set(self.limits))
            if quantity_value(self.requests[name]) > quantity_value(self.limits[name])
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def to_k8s(self) -> dict[str, dict[str, str]]:
        """The `resources` of a container spec (empty parts left out)."""
        parts = {"requests": dict(self.requests), "limits": dict(self.limits)}
        return {key: value for key, value in parts.items() if value}


class Toleration(_Model):
    """A toleration of the worker pods, with the checks Kubernetes applies to pod specs."""

    key: str = Field(default="", max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = Field(default="", max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("must have an empty value when operator is Exists")
        if not self.key and self.operator != "Exists":
            raise ValueError("with an empty key must have operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("may set tolerationSeconds only with effect NoExecute")
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The toleration as in a pod spec (unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_defaults=True) | {"operator": self.operator}


class Persistence(_Model):
    """Whether managed Redis keeps its AOF on a PersistentVolumeClaim, and its size."""

    enabled: bool = False
    size: Quantity = crd.DEFAULT_REDIS_STORAGE
    storage_class_name: DnsSubdomain | None = None

    @field_validator("size")
    @classmethod
    def _positive(cls, value: str) -> str:
        if quantity_value(value) <= 0:
            raise ValueError(f"must be a positive quantity, got {_show(value)}")
        return value


def _default_resources(values: dict[str, dict[str, str]]) -> Resources:
    return Resources.model_validate(values)


class ManagedRedis(_Model):
    """A Redis Deployment (+ Service, + PVC) that the operator creates and owns."""

    image: Image = crd.DEFAULT_REDIS_IMAGE
    resources: Resources = Field(
        default_factory=lambda: _default_resources(crd.DEFAULT_REDIS_RESOURCES)
    )
    persistence: Persistence = Field(default_factory=Persistence)


class SecretKeyRef(_Model):
    """A key of a Secret in the DistCluster's namespace."""

    name: DnsSubdomain
    key: Annotated[
        str,
        Field(min_length=1, max_length=253),
        _matching(_SECRET_KEY_RE, "a Secret key (letters, digits, '-', '_' and '.')"),
    ] = crd.DEFAULT_SECRET_KEY


class ExternalRedis(_Model):
    """A Redis the operator does not manage; its URL is read from a Secret by the pods."""

    url_secret_ref: SecretKeyRef


class RedisSpec(_Model):
    """Exactly one of `managed` and `external`; managed (with defaults) when unset."""

    managed: ManagedRedis | None = None
    external: ExternalRedis | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RedisSpec:
        if (self.managed is None) == (self.external is None):
            raise ValueError("must set exactly one of managed and external")
        return self


def _default_redis() -> RedisSpec:
    return RedisSpec.model_validate({"managed": {}})


class ClusterSpec(_Model):
    """A DistCluster's spec with every CRD default applied; see `parse_spec`."""

    role: Role
    replicas: int = Field(default=crd.DEFAULT_REPLICAS, ge=crd.MIN_REPLICAS, le=crd.MAX_REPLICAS)
    image: Image = crd.DEFAULT_IMAGE
    image_pull_policy: PullPolicy = "IfNotPresent"
    resources: Resources = Field(default_factory=lambda: _default_resources(crd.DEFAULT_RESOURCES))
    settings: dict[str, Annotated[str, Field(max_length=crd.MAX_SETTING_VALUE_LENGTH)]] = Field(
        default_factory=dict, max_length=crd.MAX_SETTINGS
    )
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=crd.MAX_TOLERATIONS)
    affinity: dict[str, Any] | None = None
    redis: RedisSpec = Field(default_factory=_default_redis)

    @field_validator("settings")
    @classmethod
    def _setting_names(cls, settings: dict[str, str]) -> dict[str, str]:
        problems = []
        for name in sorted(settings):
            if name in crd.RESERVED_SETTINGS:
                problems.append(
                    f"spec.settings.{name} is set by the operator and cannot be overridden."
                )
            elif not _SETTING_RE.match(name):
                problems.append(
                    f"spec.settings key {name!r} must be an upper-case environment variable "
                    "name (A-Z, 0-9 and _, not starting with a digit)."
                )
        if problems:
            raise ValueError("\n".join(problems))
        return settings

    @model_validator(mode="after")
    def _odd_for_raft(self) -> ClusterSpec:
        if self.role == "lock_manager" and self.replicas % 2 == 0:
            raise ValueError(
                "spec.replicas must be odd for role lock_manager, so that a Raft majority "
                f"survives the loss of a minority, got {self.replicas}."
            )
        return self

    @property
    def managed_redis(self) -> ManagedRedis | None:
        """The managed Redis settings, or None when the Redis is external."""
        return self.redis.managed

    @property
    def external_redis(self) -> ExternalRedis | None:
        """The external Redis reference, or None when the Redis is managed."""
        return self.redis.external


def check_name(name: str) -> None:
    """Raise SpecError unless `name` can name the StatefulSet, its pods and its Services."""
    problems = _name_problems(name)
    if problems:
        raise SpecError(" ".join(problems), problems)


def _name_problems(name: str) -> list[str]:
    problems = []
    if len(name) > crd.MAX_NAME_LENGTH:
        problems.append(
            f"metadata.name must be at most {crd.MAX_NAME_LENGTH} characters (it names the "
            f"StatefulSet, its pods and Services), got {len(name)}."
        )
    if not _NAME_RE.match(name):
        problems.append(
            "metadata.name must start with a letter and contain only lower-case letters, "
            f"digits and '-' (it names Services), got {name!r}."
        )
    return problems


def parse_spec(spec: Mapping[str, Any], *, name: str | None = None) -> ClusterSpec:
    """Validate a DistCluster's `spec` (and its `metadata.name` when given).

    Returns the spec with the CRD's defaults applied. Raises SpecError listing every
    problem, one sentence each, fields named by their path (`spec.redis.managed...`).
    """
    problems = _name_problems(name) if name is not None else []
    if not isinstance(spec, Mapping):
        problems.append(f"spec must be a mapping, got {_show(spec)}.")
        raise SpecError(" ".join(problems), problems)
    try:
        parsed = ClusterSpec.model_validate(_plain(spec))
    except ValidationError as exc:
        problems.extend(describe_errors(exc))
        raise SpecError(" ".join(problems), problems) from None
    if problems:
        raise SpecError(" ".join(problems), problems)
    return parsed


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists: kopf hands over read-only views."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def describe_errors(exc: ValidationError) -> list[str]:
    """One sentence per pydantic error, naming the field by its path in the resource."""
    problems: list[str] = []
    for error in exc.errors():
        path = _path(error["loc"])
        kind = error["type"]
        ctx = error.get("ctx", {})
        if kind == "value_error":
            problems.extend(_value_error_sentences(path, str(ctx.get("error", error["msg"]))))
        else:
            problems.append(_sentence(path, kind, ctx, error.get("input")))
    return problems


def _value_error_sentences(path: str, message: str) -> list[str]:
    sentences = []
    for line in message.splitlines():
        # Validators that know their full path write whole sentences; others a predicate.
        sentence = line if line.startswith(("spec", "metadata")) else f"{path} {line}"
        sentences.append(sentence if sentence.endswith(".") else sentence + ".")
    return sentences


def _sentence(path: str, kind: str, ctx: Mapping[str, Any], given: Any) -> str:
    if kind == "missing":
        return f"{path} is required."
    if kind == "extra_forbidden":
        return f"{path} is not a field of a DistCluster."
    if kind in _TYPE_WORDS:
        return f"{path} must be {_TYPE_WORDS[kind]}, got {_show(given)}."
    if kind == "literal_error":
        return f"{path} must be {ctx['expected']}, got {_show(given)}."
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = "at least" if kind == "greater_than_equal" else "at most"
        limit = ctx.get("ge", ctx.get("le"))
        return f"{path} must be {bound} {limit}, got {_show(given)}."
    if kind == "string_too_short":
        return f"{path} must not be empty."
    if kind == "string_too_long":
        return f"{path} must be at most {ctx['max_length']} characters long."
    if kind == "too_long":
        return f"{path} must have at most {ctx['max_length']} entries."
    return f"{path} is invalid ({kind}), got {_show(given)}."


def _path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " key"
        elif part.startswith(("function-", "union[", "nullable[")):
            # Pydantic's names for branches of a union or a wrapped type, not fields.
            continue
        else:
            path += f".{part}"
    return path


def _show(value: Any) -> str:
    """A short rendering of a given value for a message (never a whole mapping)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 64 else value[:61] + "...")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
