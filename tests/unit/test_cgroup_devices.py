"""Device rules → BPF program: normalization, the reference semantics, and the emitted bytes
(run through a small interpreter) deciding the same as the reference, for many requests."""
from __future__ import annotations

import itertools
import struct

import pytest

from pyoci.cgroups.devices import (ACC_MKNOD, ACC_READ, ACC_WRITE, DEFAULT_ALLOWED_DEVICES,
                                   DEV_BLOCK, DEV_CHAR, build_program, check, emulate,
                                   normalize_rules)
from pyoci.errors import ConfigError

R, W, M = ACC_READ, ACC_WRITE, ACC_MKNOD
DENY_ALL = [{"allow": False, "access": "rwm"}]


def decide(rules, dtype, major, minor, access):
    norm = normalize_rules(rules)
    ref = check(norm, dtype, major, minor, access)
    prog = emulate(build_program(norm), dtype, major, minor, access)
    assert bool(prog) == ref, (rules, dtype, major, minor, access)
    return ref


def test_normalize_defaults():
    (r,) = normalize_rules([{"allow": True}])
    assert (r.allow, r.type, r.major, r.minor, r.access) == (True, 0, -1, -1, R | W | M)
    (r,) = normalize_rules([{"allow": False, "type": "b", "major": 8, "minor": 0, "access": "rw"}])
    assert (r.allow, r.type, r.major, r.minor, r.access) == (False, DEV_BLOCK, 8, 0, R | W)


@pytest.mark.parametrize("rule,msg", [({"access": "rwm"}, "allow: required"),
                                      ({"allow": True, "type": "x"}, "type: must be a, b or c"),
                                      ({"allow": True, "access": "rwx"}, "subset of rwm"),
                                      ({"allow": True, "major": -2}, "major"),
                                      ({"allow": True, "minor": "1"}, "minor")])
def test_normalize_errors(rule, msg):
    with pytest.raises(ConfigError) as ei:
        normalize_rules([{"allow": True}, rule])
    assert "linux.resources.devices[1]" in str(ei.value) and msg in str(ei.value)


def test_deny_all_then_allow_one():
    rules = DENY_ALL + [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    assert decide(rules, DEV_CHAR, 1, 3, R | W)
    assert not decide(rules, DEV_CHAR, 1, 5, R)
    assert not decide(rules, DEV_BLOCK, 1, 3, R)


def test_last_rule_wins():
    rules = DENY_ALL + [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]
    assert decide(rules, DEV_CHAR, 1, 3, R)
    assert not decide(rules, DEV_CHAR, 1, 3, W)
    assert not decide(rules, DEV_CHAR, 1, 3, R | W)
    assert decide(rules, DEV_CHAR, 1, 3, M)


def test_allow_all_then_deny_one():
    rules = [{"allow": True, "access": "rwm"},
             {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    assert not decide(rules, DEV_CHAR, 1, 3, R)
    assert decide(rules, DEV_CHAR, 1, 5, R | W)
    assert decide(rules, DEV_BLOCK, 8, 0, R | W | M)


def test_a_later_deny_all_overrides_everything_before():
    rules = [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}] + DENY_ALL
    assert not decide(rules, DEV_CHAR, 1, 3, R)


def test_wildcards():
    rules = DENY_ALL + [{"allow": True, "type": "c", "major": 136, "access": "rwm"},
                        {"allow": True, "type": "b", "minor": 7, "access": "r"}]
    assert decide(rules, DEV_CHAR, 136, 0, R | W)
    assert decide(rules, DEV_CHAR, 136, 99, R)
    assert not decide(rules, DEV_CHAR, 137, 0, R)
    assert decide(rules, DEV_BLOCK, 8, 7, R)
    assert not decide(rules, DEV_BLOCK, 8, 7, W)


def test_access_bits_split_across_rules():
    rules = DENY_ALL + [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"},
                        {"allow": True, "type": "c", "major": 1, "access": "w"}]
    assert decide(rules, DEV_CHAR, 1, 3, R | W)     # r from one rule, w from the other
    assert not decide(rules, DEV_CHAR, 1, 4, R | W)  # only w is allowed for 1:4


def test_default_allow_list():
    rules = DENY_ALL + DEFAULT_ALLOWED_DEVICES
    for major, minor in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, 4),
                         (10, 200)]:
        assert decide(rules, DEV_CHAR, major, minor, R | W), (major, minor)
    assert decide(rules, DEV_CHAR, 4, 1, M)            # mknod of anything
    assert decide(rules, DEV_BLOCK, 8, 0, M)
    assert not decide(rules, DEV_CHAR, 4, 1, R)        # but no open of /dev/tty1
    assert not decide(rules, DEV_BLOCK, 8, 0, R)


def test_no_rules_denies():
    assert not decide([], DEV_CHAR, 1, 3, R)


def test_exhaustive_agreement_on_a_mixed_rule_set():
    rules = [{"allow": True, "access": "rwm"},
             {"allow": False, "type": "c", "access": "w"},
             {"allow": True, "type": "c", "major": 1, "access": "rw"},
             {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "r"},
             {"allow": False, "type": "b", "major": 8, "access": "m"},
             {"allow": True, "type": "b", "major": 8, "minor": 1, "access": "rwm"}]
    seen = set()
    for dtype, major, minor, access in itertools.product(
            (DEV_BLOCK, DEV_CHAR), (1, 8, 9), (1, 3, 4), range(1, 8)):
        seen.add(decide(rules, dtype, major, minor, access))
    assert seen == {True, False}


def test_program_shape():
    prog = build_program(normalize_rules(DENY_ALL + DEFAULT_ALLOWED_DEVICES))
    assert len(prog) % 8 == 0
    # last two instructions: r0 = 0; exit
    assert struct.unpack_from("<BBhi", prog, len(prog) - 16) == (0xb7, 0, 0, 0)
    assert struct.unpack_from("<BBhi", prog, len(prog) - 8)[0] == 0x95
