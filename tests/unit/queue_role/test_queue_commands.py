"""The pure command builders and reply parsers of the queue (no Redis)."""

from __future__ import annotations

from distcluster_worker.queue_role import commands as cmd
from distcluster_worker.queue_role.commands import Pending, TopicKeys


def test_keys_cannot_collide_across_kinds_or_topics() -> None:
    a = TopicKeys.of("dc:c:queue", "a")
    b = TopicKeys.of("dc:c:queue", "a:dlq")
    assert len({a.stream, a.dead_letters, b.stream, b.dead_letters}) == 4
    assert a.idempotency("a:b", "c") != a.idempotency("a", "b:c")


def test_builders_make_redis_py_style_argument_tuples() -> None:
    assert cmd.xadd("s", '"x"') == ("XADD", "s", "*", "b", '"x"')
    assert cmd.xgroup_create("s", "g") == ("XGROUP", "CREATE", "s", "g", "0", "MKSTREAM")
    assert cmd.xreadgroup_new("s", "g", "c", 5, 0)[-3:] == ("STREAMS", "s", ">")
    assert "BLOCK" not in cmd.xreadgroup_new("s", "g", "c", 5, 0)  # BLOCK 0 would be forever
    assert cmd.xreadgroup_new("s", "g", "c", 5, 100)[6:8] == ("BLOCK", 100)
    assert cmd.xpending_range("s", "g", 3, idle_ms=10) == (
        "XPENDING",
        "s",
        "g",
        "IDLE",
        10,
        "-",
        "+",
        3,
    )
    assert cmd.xpending_range("s", "g", 3, consumer="c")[-1] == "c"
    assert cmd.xclaim_idle("s", "g", "c", ["1-0"], 99)[-3:] == ("IDLE", 99, "JUSTID")
    assert cmd.xtrim_minid("s", "5-1") == ("XTRIM", "s", "MINID", "5-1")
    keys, args = cmd.publish_once(TopicKeys.of("n", "t"), "t", "k", ["1", "2"], 500)
    assert keys == ["n:stream:t", "n:idem:1:t:k"] and args == [500, "1", "2"]
    dead = cmd.dead_letter("d", 10, Pending("1-0", "c", 5, 3), "g", b"x", 3)
    assert dead[:6] == ("XADD", "d", "MAXLEN", "~", 10, "*") and dead[-2:] == ("b", b"x")


def test_parsers_accept_resp2_and_resp3_shapes() -> None:
    resp2 = [[b"s", [[b"1-0", [b"b", b'"x"']]]]]
    resp3 = {b"s": [[b"1-0", [b"b", b'"x"']]]}
    assert cmd.parse_xreadgroup(resp2) == cmd.parse_xreadgroup(resp3) == [("1-0", {"b": b'"x"'})]
    assert cmd.parse_xreadgroup(None) == []
    assert cmd.parse_entries([[b"1-0", None]]) == []
    assert cmd.parse_pending([[b"1-0", b"c", 7, 2]]) == [Pending("1-0", "c", 7, 2)]
    flat = [b"name", b"g", b"consumers", 1, b"pending", 2, b"last-delivered-id", b"3-0"]
    as_map = {b"name": b"g", b"consumers": 1, b"pending": 2, b"last-delivered-id": b"3-0"}
    assert cmd.parse_groups([flat]) == cmd.parse_groups([as_map])
    assert cmd.parse_summary_first([0, None, None, None]) is None
    assert cmd.parse_summary_first([2, b"4-0", b"5-0", []]) == "4-0"
    assert cmd.parse_ids(b"1-0,2-0") == ["1-0", "2-0"]


def test_dead_letter_split_and_trim_threshold() -> None:
    pending = [Pending("1-0", "c", 0, 2), Pending("2-0", "c", 0, 3)]
    deliver, dead = cmd.split_dead(pending, 3)
    assert [p.id for p in deliver] == ["1-0"] and [p.id for p in dead] == ["2-0"]
    assert cmd.trim_threshold([]) is None  # no group: keep everything
    assert cmd.trim_threshold([("9-0", None)]) == "9-1"  # all delivered and acked
    assert cmd.trim_threshold([("9-0", "4-0"), ("7-3", None)]) == "4-0"
    assert cmd.trim_threshold([("10-0", None), ("9-5", None)]) == "9-6"
    assert cmd.id_age_ms("1000-0", 1500) == 500


def test_script_builders_put_keys_and_args_where_the_scripts_read_them() -> None:
    assert cmd.publish_batch("s", ["1", "2"]) == (["s"], ["1", "2"])
    assert cmd.ack_each("s", "g", ["1-0", "2-0"]) == (["s"], ["g", "1-0", "2-0"])
    assert cmd.consume_first("s", "g", "c", 10, 500, True) == (["s"], ["g", "c", 10, 500, 1])
    assert cmd.consume_first("s", "g", "c", 10, 500, False)[1][-1] == 0


def test_consume_script_reply_is_parsed_in_both_shapes() -> None:
    nothing_pending = [[], [], 1, b"1-0,2-0", b'["x",{"k":1}]']
    first = cmd.parse_consume_first(nothing_pending)
    assert (first.own, first.idle, first.read_new) == ([], [], True)
    assert first.new_ids == ["1-0", "2-0"] and first.new_bodies_json == b'["x",{"k":1}]'
    empty = cmd.parse_consume_first([[], [], 1, b"", b"[]"])
    assert empty.read_new and empty.new_ids == [] and empty.new_bodies_json == b"[]"
    pending = [[[b"1-0", b"c", 7, 2]], [[b"2-0", b"d", 900, 1]], 0, b"", b"[]"]
    first = cmd.parse_consume_first(pending)
    assert first.own == [Pending("1-0", "c", 7, 2)] and first.idle == [Pending("2-0", "d", 900, 1)]
    assert not first.read_new and first.new_ids == []
    assert cmd.parse_consume_first([[], [], 1, "3-0", '["y"]']).new_bodies_json == b'["y"]'


def test_ack_and_publish_script_replies() -> None:
    assert cmd.parse_acked(b"101") == [True, False, True]
    assert cmd.parse_acked("") == []
    assert cmd.parse_ids(b"1-0") == ["1-0"] and cmd.parse_ids(b"") == []
