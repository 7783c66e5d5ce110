"""tideline.memory: a learner's resident size and its container's limit, read from fake
/proc and cgroup files (the paths are parameters), and the reading as its status hash holds it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tideline.memory import FIELDS, MemoryUse, Probe, memory_limit, resident_bytes, size

GIB, MIB = 1 << 30, 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
V1_NO_LIMIT = "9223372036854771712"  # what cgroup v1 says for "no limit"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("statm", "expected"),
    [
        ("765 420 392 5 0 123 0\n", 420 * PAGE),
        ("765\n", None),
        ("many pages\n", None),
        (None, None),
    ],
    ids=[
        "the second field of statm is the resident set, in pages",
        "a statm with one field says nothing",
        "a statm that is no numbers says nothing",
        "no statm (not Linux): not known",
    ],
)
def test_the_resident_set_is_read_from_statm(tmp_path: Path, statm, expected) -> None:
    path = tmp_path / "statm"
    if statm is not None:
        path.write_text(statm)
    assert resident_bytes(path) == expected


def test_this_process_s_resident_set_is_some_megabytes() -> None:
    assert 1 * MIB < (resident_bytes() or 0) < 64 * GIB


V2 = {"cgroup.controllers": "cpu memory pids\n"}


@pytest.mark.parametrize(
    ("files", "proc", "expected"),
    [
        ({**V2, "memory.max": "2147483648\n"}, "0::/\n", 2 * GIB),
        ({**V2, "memory.max": "max\n"}, "0::/\n", None),
        ({**V2, "memory.max": "2147483648\n"}, None, 2 * GIB),
        ({**V2, "memory.max": "2147483648\n"}, "0::/kubepods/burstable/pod1/c1\n", 2 * GIB),
        ({**V2, "kubepods/memory.max": "max\n", "kubepods/pod1/memory.max": "3221225472\n",
          "kubepods/pod1/c1/memory.max": "1073741824\n"}, "0::/kubepods/pod1/c1\n", GIB),
        ({**V2, "kubepods/pod1/memory.max": "1073741824\n",
          "kubepods/pod1/c1/memory.max": "max\n"}, "0::/kubepods/pod1/c1\n", GIB),
        (V2, "0::/\n", None),
        ({"memory/memory.limit_in_bytes": "536870912\n"}, "4:memory:/\n0::/\n", 512 * MIB),
        ({"memory/memory.limit_in_bytes": V1_NO_LIMIT}, "4:memory:/\n", None),
        ({"memory/memory.limit_in_bytes": V1_NO_LIMIT,
          "memory/docker/abc/memory.limit_in_bytes": "536870912\n"},
         "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n", 512 * MIB),
        ({"memory/memory.limit_in_bytes": "536870912\n"},
         "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n", 512 * MIB),
        ({"memory/memory.limit_in_bytes": "a lot\n"}, "4:memory:/\n", None),
        ({}, "0::/\n", None),
    ],
    ids=[
        "cgroup v2 in its own namespace: memory.max at the root is the container's limit",
        "cgroup v2 memory.max 'max' is no limit",
        "no /proc/self/cgroup: the root's file",
        "v2, the process's cgroup path not shown under the root (its namespace): the root's file",
        "v2, the host's view: the container's own cgroup and its ancestors, the lowest holds",
        "v2, a limit on the pod's cgroup only holds for its containers",
        "v2 root cgroup with no memory.max (a process on a host): no limit",
        "cgroup v1: memory.limit_in_bytes",
        "cgroup v1's huge page-aligned number is no limit",
        "v1, the host's view: the memory controller's line names the container's cgroup",
        "v1, the container's cgroup mounted at the root: the root's file",
        "a limit file that is no number is no limit",
        "no cgroup files at all: not known",
    ],
)  # fmt: skip
def test_the_container_s_memory_limit_is_read_from_its_cgroup(tmp_path, files, proc, expected):
    root = _tree(tmp_path / "cgroup", files)
    root.mkdir(exist_ok=True)
    proc_cgroup = tmp_path / "proc-cgroup"
    if proc is not None:
        proc_cgroup.write_text(proc)
    assert memory_limit(root, proc_cgroup) == expected


def test_the_probe_reads_the_files_it_is_given(tmp_path: Path) -> None:
    _tree(tmp_path, {"statm": "100 50 0 0 0 0 0\n", "proc": "0::/\n",
                     "cg/cgroup.controllers": "memory\n", "cg/memory.max": "4096000\n"})  # fmt: skip
    probe = Probe(statm=tmp_path / "statm", root=tmp_path / "cg", proc_cgroup=tmp_path / "proc")
    assert probe("5f3a", state=1234) == MemoryUse("5f3a", 50 * PAGE, 4096000, 1234)
    assert Probe(statm=tmp_path / "none")("5f3a") is None


@pytest.mark.parametrize(
    ("use", "written"),
    [
        (MemoryUse("r", 10, 20, 5), {"rssBytes": "10", "memoryLimitBytes": "20", "stateBytes": "5"}),
        (MemoryUse("r", 10), {"rssBytes": "10", "memoryLimitBytes": "", "stateBytes": ""}),
    ],
    ids=[
        "every field written as a number",
        "what is not known is written empty: a predecessor's value does not linger",
    ],
)  # fmt: skip
def test_a_reading_round_trips_through_the_status_hash(use, written) -> None:
    assert use.to_hash() == written and tuple(written) == FIELDS
    assert MemoryUse.of_hash("r", [v.encode() for v in written.values()]) == use


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([None, None, None], None),
        ([b"", b"20", b"5"], None),
        ([b"10", b"lots", b"-5"], MemoryUse("r", 10)),
    ],
    ids=[
        "a learner that never reported: no reading",
        "no resident size: no reading",
        "fields that are no counts are not known",
    ],
)
def test_a_status_hash_without_a_reading_is_none(values, expected) -> None:
    assert MemoryUse.of_hash("r", values) == expected


@pytest.mark.parametrize(
    ("rss", "limit", "was", "near"),
    [
        (85, 100, False, True),
        (84, 100, False, False),
        (82, 100, True, True),
        (79, 100, True, False),
        (10**12, None, True, False),
    ],
    ids=[
        "at 85 % of its limit a learner is near it",
        "at 84 % it is not",
        "once near, it stays near until below 80 % (no flapping at 85 %)",
        "below 80 % it is near no more",
        "without a limit nothing is near it",
    ],
)
def test_near_the_limit_has_hysteresis(rss, limit, was, near) -> None:
    assert MemoryUse("r", rss, limit).near(was) is near


@pytest.mark.parametrize(
    ("use", "said"),
    [
        (MemoryUse("5f3a", int(1.72 * GIB), 2 * GIB, 900 * MIB),
         "learner of revision 5f3a uses 1.7 GiB of its 2 GiB limit (86 %); its state is 900 MiB"),
        (MemoryUse("5f3a", 300 * MIB, None, 20 * MIB),
         "learner of revision 5f3a uses 300 MiB with no memory limit; its state is 20 MiB"),
        (MemoryUse("5f3a", 300 * MIB, GIB),
         "learner of revision 5f3a uses 300 MiB of its 1 GiB limit (29 %)"),
    ],
    ids=[
        "sizes as people read them, the share, and the state's size",
        "no limit is said",
        "a learner not checkpointed yet has no state size to say",
    ],
)  # fmt: skip
def test_a_reading_says_itself_in_one_line(use, said) -> None:
    assert use.summary() == said


def test_sizes_round_to_what_people_read() -> None:
    assert [size(n) for n in (0, 1023, 1024, 1536 * MIB, 10 * GIB)] == [
        "0 B", "1023 B", "1 KiB", "1.5 GiB", "10 GiB"
    ]  # fmt: skip
