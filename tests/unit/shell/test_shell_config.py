"""Settings are validated once, and every bad variable is named with a clear sentence."""

from __future__ import annotations

import pytest

from distcluster_worker.shell.config import (
    _RULES,
    ConfigError,
    Settings,
    host_node_id,
    load_settings,
    parse_peers,
)


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings.node_id == host_node_id()
    assert settings.node_type == "lock_manager"
    assert settings.port == 8001
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.peer_urls == {}
    assert settings.lock_max_ttl_ms == 3_600_000


def test_mapping_is_the_only_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9999")
    assert load_settings({}).port == 8001
    assert load_settings().port == 9999
    assert load_settings({"PORT": "8123"}).port == 8123


def test_values_are_read_from_upper_case_names() -> None:
    settings = load_settings(
        {"NODE_ID": "n-2.a", "PORT": "8002", "LOG_LEVEL": "debug", "RAFT_TICK_MS": "20"}
    )
    assert (settings.node_id, settings.port, settings.log_level) == ("n-2.a", 8002, "DEBUG")
    assert settings.raft_tick_ms == 20


def test_port_error_sentence() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"PORT": "abc"})
    assert "PORT: must be an integer between 1 and 65535, got 'abc'" in str(err.value)


def test_every_bad_variable_is_named_at_once() -> None:
    env = {
        "NODE_ID": "bad id",
        "NODE_TYPE": "mesh",
        "PORT": "70000",
        "PEERS": "node2",
        "REDIS_URL": "http://x",
        "CLUSTER_NAME": "Upper",
        "LOG_LEVEL": "loud",
        "RPC_TIMEOUT_MS": "0",
        "MAX_BODY_BYTES": "-5",
        "LOCK_MAX_WAIT_MS": "soon",
    }
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    problems = err.value.problems
    named = {problem.split(":", 1)[0] for problem in problems}
    assert named == set(env)
    assert "NODE_TYPE: must be one of lock_manager, queue, cache, got 'mesh'" in problems
    assert "RPC_TIMEOUT_MS: must be a positive integer, got '0'" in problems
    assert str(err.value) == "\n".join(problems)


@pytest.mark.parametrize("field", [name for name in Settings.model_fields])
def test_every_field_has_a_sentence(field: str) -> None:
    assert field in _RULES


def test_relations_between_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"RAFT_HEARTBEAT_TICKS": "10", "LOCK_DEFAULT_TTL_MS": "4000000"})
    message = str(err.value)
    assert "RAFT_HEARTBEAT_TICKS: must be smaller than RAFT_ELECTION_TICKS" in message
    assert "LOCK_DEFAULT_TTL_MS: must not exceed LOCK_MAX_TTL_MS" in message


def test_peers_parsed_with_self_dropped() -> None:
    settings = load_settings(
        {
            "NODE_ID": "node1",
            "PEERS": " node1=127.0.0.1:8001, node2=http://10.0.0.2:8002/ ,node3=n3.svc:8003,",
        }
    )
    assert settings.peer_urls == {
        "node2": "http://10.0.0.2:8002",
        "node3": "http://n3.svc:8003",
    }


def test_empty_variables_count_as_unset() -> None:
    settings = load_settings({"PEERS": "", "PORT": ""})
    assert settings.peer_urls == {}
    assert settings.port == 8001


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("node2", "must look like id=host:port"),
        ("node2=host", "must look like id=host:port"),
        ("node2=host:0", "not an integer 1-65535"),
        ("node2=host:x", "not an integer 1-65535"),
        ("bad id=host:1", "peer id 'bad id'"),
        ("a=h:1,a=h:2", "appears twice"),
        ("=h:1", "must look like id=host:port"),
    ],
)
def test_bad_peers_are_explained(raw: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_peers(raw)
    with pytest.raises(ConfigError) as err:
        load_settings({"PEERS": raw})
    assert str(err.value).startswith("PEERS: ")


def test_redis_key_namespaces_by_prefix_and_cluster() -> None:
    settings = load_settings({"KEY_PREFIX": "dc", "CLUSTER_NAME": "blue"})
    assert settings.redis_key("raft", "node1", "log") == "dc:blue:raft:node1:log"
