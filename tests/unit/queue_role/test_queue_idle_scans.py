"""When a consume may skip the scan for idle entries (pure, times are arguments)."""

from __future__ import annotations

import pytest

from distcluster_worker.queue_role.idle_scans import IdleScans

KEY = ("s", "g", 30_000)


def test_a_scan_that_saw_every_idle_entry_is_trusted_for_the_interval() -> None:
    scans = IdleScans(interval_ms=100)
    assert scans.due(KEY, 0)
    scans.scanned(KEY, 0, asked=10, found=3)
    assert not scans.due(KEY, 1)
    assert not scans.due(KEY, 99)
    assert scans.due(KEY, 100)  # the bound on how late a redelivery can be


def test_a_scan_that_filled_its_count_proves_nothing_about_the_rest() -> None:
    scans = IdleScans(interval_ms=100)
    scans.scanned(KEY, 0, asked=2, found=2)
    assert scans.due(KEY, 1)
    scans.scanned(KEY, 5, asked=5, found=0)
    scans.scanned(KEY, 6, asked=1, found=1)  # a full scan also drops an earlier promise
    assert scans.due(KEY, 7)


def test_keys_are_per_stream_group_and_visibility() -> None:
    scans = IdleScans(interval_ms=100)
    scans.scanned(KEY, 0, asked=10, found=0)
    assert scans.due(("s", "g", 1_000), 1)  # a shorter visibility finds other entries
    assert scans.due(("s", "other", 30_000), 1)
    assert scans.due(("t", "g", 30_000), 1)
    assert not scans.due(KEY, 1)


def test_forget_makes_every_visibility_of_the_group_scan_again() -> None:
    scans = IdleScans(interval_ms=100)
    for visibility in (1_000, 30_000):
        scans.scanned(("s", "g", visibility), 0, asked=10, found=0)
    scans.scanned(("s", "h", 1_000), 0, asked=10, found=0)
    scans.forget("s", "g")
    assert scans.due(("s", "g", 1_000), 1) and scans.due(("s", "g", 30_000), 1)
    assert not scans.due(("s", "h", 1_000), 1)


def test_interval_zero_scans_every_time() -> None:
    scans = IdleScans(interval_ms=0)
    scans.scanned(KEY, 0, asked=10, found=0)
    assert scans.due(KEY, 0) and len(scans) == 0


def test_memory_is_bounded_and_forgetting_only_costs_a_scan() -> None:
    scans = IdleScans(interval_ms=100, max_keys=3)
    for i in range(3):
        scans.scanned(("s", f"g{i}", 1), 0, asked=1, found=0)
    scans.scanned(("s", "late", 1), 50, asked=1, found=0)  # nothing expired: all dropped
    assert len(scans) == 1 and not scans.due(("s", "late", 1), 60)
    assert scans.due(("s", "g0", 1), 60)
    for i in range(2):
        scans.scanned(("s", f"h{i}", 1), 60, asked=1, found=0)
    scans.scanned(("s", "later", 1), 155, asked=1, found=0)  # only the expired one goes
    assert len(scans) == 3 and scans.due(("s", "late", 1), 155)
    assert not scans.due(("s", "h0", 1), 155)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        IdleScans(interval_ms=-1)
    with pytest.raises(ValueError):
        IdleScans(interval_ms=1, max_keys=0)
