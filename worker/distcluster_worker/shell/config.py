"""Node configuration, read from the environment and validated once at start-up.

Every setting is an environment variable named after the field in upper case, with no
prefix (``NODE_ID``, ``PORT``, ``PEERS`` ...), so that the same names work in a shell, in
``.env`` for docker compose and in a Kubernetes pod spec.

A node that starts with a bad value fails later and far from the cause, so
``load_settings`` checks everything up front and reports *every* bad variable at once,
each with a sentence saying what was expected and what was given. The rules live next to
the fields (pydantic constraints) and the sentences in ``_RULES``; a test checks that every
field has a sentence.

``PEERS`` stays a plain string field (``"node2=10.0.0.2:8002,node3=http://n3:8003"``) so
that pydantic-settings never tries to JSON-decode it; its syntax is checked by a validator
and ``Settings.peer_urls`` gives the parsed ``id -> "http://host:port"`` map with the node
itself dropped (the same string can then be given to every node of a cluster).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

R = TypeVar("R", bound=BaseModel)

NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
CLUSTER_NAME_RE = re.compile(r"^[a-z0-9-]{1,63}$")
KEY_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.\-]+$|^\[[0-9A-Fa-f:.]+\]$")

_POSITIVE = "a positive integer"
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})

# One sentence per field: "NAME: must be <rule>, got '<value>'".
_RULES: dict[str, str] = {
    "node_id": "1 to 63 characters from A-Z a-z 0-9 _ . -",
    "node_type": "one of lock_manager, queue, cache",
    "host": "a host name or IP address to bind",
    "port": "an integer between 1 and 65535",
    "peers": "comma-separated id=host:port entries",
    "redis_url": "a redis://, rediss:// or unix:// URL",
    "cluster_name": "1 to 63 characters from a-z 0-9 -",
    "key_prefix": "1 to 32 characters from A-Z a-z 0-9 _ . -",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "max_body_bytes": _POSITIVE,
    "rpc_timeout_ms": _POSITIVE,
    "rpc_retries": "an integer between 0 and 10",
    "shutdown_grace_ms": _POSITIVE,
    "request_timeout_ms": _POSITIVE,
    "raft_tick_ms": _POSITIVE,
    "raft_election_ticks": "an integer of at least 2",
    "raft_heartbeat_ticks": _POSITIVE,
    "raft_snapshot_entries": _POSITIVE,
    "lock_default_ttl_ms": _POSITIVE,
    "lock_max_ttl_ms": _POSITIVE,
    "lock_max_wait_ms": _POSITIVE,
    "discovery": "one of redis, static",
    "advertise_url": "an http://host:port URL",
    "discovery_interval_ms": "an integer of at least 50",
    "discovery_ttl_ms": _POSITIVE,
}


class ConfigError(Exception):
    """The configuration is invalid; the message lists every bad variable, one per line."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems if problems is not None else [message]


def host_node_id() -> str:
    """The default ``NODE_ID``: this machine's host name, made a valid id.

    In a container that is the container's host name (its short id under docker
    compose, the pod name in Kubernetes), so the replicas of one scalable service get
    distinct ids with no per-replica setting.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:63]
    return name or "node"


def parse_peers(raw: str) -> dict[str, str]:
    """Parse ``PEERS`` into ``id -> "http://host:port"``; raise ValueError on bad syntax."""
    peers: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        peer_id, sep, address = item.partition("=")
        peer_id, address = peer_id.strip(), address.strip()
        if not sep or not peer_id or not address:
            raise ValueError(f"entry {item!r} must look like id=host:port")
        if not NODE_ID_RE.match(peer_id):
            raise ValueError(f"peer id {peer_id!r} must be {_RULES['node_id']}")
        if peer_id in peers:
            raise ValueError(f"peer id {peer_id!r} appears twice")
        peers[peer_id] = _peer_url(item, address)
    return peers


def _peer_url(item: str, address: str) -> str:
    """Normalise ``host:port`` or ``http://host:port`` to ``http://host:port``."""
    if address.startswith("http://"):
        address = address[len("http://") :]
    address = address.rstrip("/")
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not _HOST_RE.match(host):
        raise ValueError(f"entry {item!r} must look like id=host:port")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"entry {item!r} has port {port_text!r}, not an integer 1-65535")
    return f"http://{host}:{int(port_text)}"


class Settings(BaseSettings):
    """All settings of one node; see the module docstring for naming and validation."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    node_id: str = Field(default_factory=lambda: host_node_id(), pattern=NODE_ID_RE.pattern)
    node_type: Literal["lock_manager", "queue", "cache"] = "lock_manager"
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8001, ge=1, le=65535)
    peers: str = ""
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(rediss?|unix)://")
    cluster_name: str = Field(default="distcluster", pattern=CLUSTER_NAME_RE.pattern)
    key_prefix: str = Field(default="dc", pattern=KEY_PREFIX_RE.pattern)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: int = Field(default=65536, gt=0)
    rpc_timeout_ms: int = Field(default=1000, gt=0)
    rpc_retries: int = Field(default=2, ge=0, le=10)
    shutdown_grace_ms: int = Field(default=5000, gt=0)
    request_timeout_ms: int = Field(default=5000, gt=0)
    raft_tick_ms: int = Field(default=50, gt=0)
    raft_election_ticks: int = Field(default=10, ge=2)
    raft_heartbeat_ticks: int = Field(default=1, gt=0)
    raft_snapshot_entries: int = Field(default=20000, gt=0)
    lock_default_ttl_ms: int = Field(default=30000, gt=0)
    lock_max_ttl_ms: int = Field(default=3_600_000, gt=0)
    lock_max_wait_ms: int = Field(default=300_000, gt=0)
    discovery: Literal["redis", "static"] = "redis"
    advertise_url: str = ""
    discovery_interval_ms: int = Field(default=1000, ge=50)
    discovery_ttl_ms: int = Field(default=10_000, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("peers")
    @classmethod
    def _check_peers(cls, value: str) -> str:
        parse_peers(value)
        return value

    @field_validator("discovery", mode="before")
    @classmethod
    def _lower_discovery(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("advertise_url")
    @classmethod
    def _check_advertise_url(cls, value: str) -> str:
        if value:
            try:
                _peer_url(value, value)
            except ValueError:
                raise ValueError(f"must be {_RULES['advertise_url']}, got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        problems = []
        if self.discovery_ttl_ms < 3 * self.discovery_interval_ms:
            problems.append(
                f"DISCOVERY_TTL_MS: must be at least 3 x DISCOVERY_INTERVAL_MS "
                f"({3 * self.discovery_interval_ms}), got {self.discovery_ttl_ms}"
            )
        if self.raft_heartbeat_ticks >= self.raft_election_ticks:
            problems.append(
                f"RAFT_HEARTBEAT_TICKS: must be smaller than RAFT_ELECTION_TICKS "
                f"({self.raft_election_ticks}), got {self.raft_heartbeat_ticks}"
            )
        if self.lock_default_ttl_ms > self.lock_max_ttl_ms:
            problems.append(
                f"LOCK_DEFAULT_TTL_MS: must not exceed LOCK_MAX_TTL_MS "
                f"({self.lock_max_ttl_ms}), got {self.lock_default_ttl_ms}"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def peer_urls(self) -> dict[str, str]:
        """Other nodes of the cluster, ``id -> "http://host:port"`` (this node dropped)."""
        return {k: v for k, v in parse_peers(self.peers).items() if k != self.node_id}

    @property
    def base_url(self) -> str:
        """This node's own URL as peers would see it when bound to ``host``."""
        return f"http://{self.host}:{self.port}"

    @property
    def advertised_url(self) -> str:
        """The URL this node announces to peers (discovery): ``ADVERTISE_URL`` if set,
        else ``http://HOST:PORT``, with the machine's host name for a wildcard ``HOST``
        (in a container that name is what the other containers resolve)."""
        if self.advertise_url:
            return _peer_url(self.advertise_url, self.advertise_url)
        host = socket.gethostname() if self.host in _WILDCARD_HOSTS else self.host
        return f"http://{host}:{self.port}"

    def redis_key(self, *parts: str) -> str:
        """A Redis key in this cluster's namespace: ``{prefix}:{cluster}:{parts...}``."""
        return f"{self.key_prefix}:{self.cluster_name}:" + ":".join(parts)


class _MappingSettings(Settings):
    """Settings read only from the mapping given to ``load_settings``, never os.environ."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from ``env`` (default: the process environment).

    An empty variable counts as unset (``PEERS=`` in a ``.env`` file means no peers).
    Raises ConfigError naming every bad variable.
    """
    source = os.environ if env is None else env
    values = {
        name: source[name.upper()]
        for name in Settings.model_fields
        if name.upper() in source and source[name.upper()] != ""
    }
    try:
        # The mapping is the only source: os.environ must not fill in what it lacks.
        return _MappingSettings.model_validate(values)
    except ValidationError as exc:
        problems = describe_errors(exc)
        raise ConfigError("\n".join(problems), problems) from None


def describe_errors(exc: ValidationError) -> list[str]:
    """Turn pydantic's errors into one sentence per bad variable."""
    problems: list[str] = []
    for error in exc.errors():
        loc = error.get("loc", ())
        field = str(loc[0]) if loc else ""
        if not field:
            problems.extend(_strip_value_error(error["msg"]).splitlines())
            continue
        given = error.get("input")
        if error["type"] == "value_error":
            sentence = _strip_value_error(error["msg"])
        else:
            sentence = f"must be {_RULES.get(field, error['msg'])}, got {_show(given)}"
        problems.append(f"{field.upper()}: {sentence}")
    return problems


def _strip_value_error(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else repr(str(value))


def load_role_settings(model: type[R], prefix: str, env: Mapping[str, str] | None = None) -> R:
    """A role's own settings from ``{prefix}{FIELD}`` variables; empty means unset.

    Environment values are text, so the model validates in lax mode ("500" is 500).
    Raises ConfigError with one sentence per bad variable.
    """
    source = os.environ if env is None else env
    values: dict[str, str] = {}
    for name in model.model_fields:
        raw = source.get(prefix + name.upper(), "")
        if raw != "":
            values[name] = raw
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = _describe_role_errors(exc, prefix)
        raise ConfigError("\n".join(problems), problems) from None


def _describe_role_errors(exc: ValidationError, prefix: str) -> list[str]:
    problems: list[str] = []
    for error in exc.errors():
        loc = error.get("loc", ())
        message = _strip_value_error(str(error["msg"]))
        if not loc:
            problems.extend(message.splitlines())
            continue
        name = prefix + str(loc[0]).upper()
        problems.append(f"{name}: {message.lower()}, got {error.get('input')!r}")
    return problems
