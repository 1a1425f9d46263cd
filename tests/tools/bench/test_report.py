"""The benchmark's readings of the machine."""

from __future__ import annotations

import hashlib

from tools.bench._report import busy_percent, machine_cpu_ticks


def test_machine_ticks_grow_and_busy_never_exceeds_total() -> None:
    before = machine_cpu_ticks()
    hashlib.pbkdf2_hmac("sha256", b"spin", b"salt", 200_000)  # some CPU, so that ticks pass
    after = machine_cpu_ticks()
    assert 0 < before[0] <= before[1]
    assert after[0] >= before[0] and after[1] > before[1]
    assert 0 <= busy_percent(before, after) <= 100


def test_busy_percent_is_the_busy_share_of_the_ticks_between_two_readings() -> None:
    assert busy_percent((100, 1000), (175, 1100)) == 75.0
    assert busy_percent((5, 10), (5, 10)) == 0.0  # no time passed: no division by zero
