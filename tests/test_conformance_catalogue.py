"""The conformance catalogue is complete and the runner's output has the agreed shape (no root needed)."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conformance import report  # noqa: E402
from conformance.catalogue import AREAS, ITEMS, load_checks  # noqa: E402
from conformance.__main__ import parse_only  # noqa: E402

CHECKLIST = Path("/work/shared/spec-checklist.md")


def checklist_numbers() -> list[int]:
    nums = []
    in_b = False
    for line in CHECKLIST.read_text().splitlines():
        if line.startswith("## B."):
            in_b = True
        elif line.startswith("## ") and in_b:
            break
        elif in_b:
            m = re.match(r"^(\d+)\. ", line)
            if m:
                nums.append(int(m.group(1)))
    return nums


@pytest.fixture(scope="module")
def items():
    return load_checks()


@pytest.mark.skipif(not CHECKLIST.exists(), reason="shared checklist not available")
def test_every_checklist_item_catalogued_once(items):
    nums = checklist_numbers()
    assert len(nums) == 165 and len(set(nums)) == 165
    assert sorted(items) == sorted(nums)


def test_catalogue_numbers_contiguous(items):
    assert sorted(items) == list(range(1, 166))


def test_every_entry_has_a_check_or_a_reason(items):
    for n, it in items.items():
        assert (it.check is None) != (it.reason is None), f"spec#{n} needs exactly one of check/reason"
        assert it.level and it.text and it.source, f"spec#{n} lacks level/text/source"
        if it.reason:
            assert len(it.reason) > 20, f"spec#{n}: the reason must explain"


def test_enough_real_checks(items):
    checked = [n for n, it in items.items() if it.check is not None]
    assert len(checked) >= 120, len(checked)


def test_checks_record_where_they_fail(items):
    missing = [n for n, it in items.items() if it.check is not None and not it.fails_on
               and n not in (71, 125, 142)]  # host-dependent: they skip here (no LSM, no memory controller)
    assert not missing, f"checks without a fails_on note: {missing}"


def test_areas_cover_all_items():
    covered = [n for _, lo, hi in AREAS for n in range(lo, hi + 1)]
    assert covered == list(range(1, 166))


def test_levels_use_rfc2119_words(items):
    words = {"MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY", "(defined)"}
    for n, it in items.items():
        parts = {p.strip() for p in it.level.split(",")}
        assert parts <= words, f"spec#{n}: level {it.level!r}"


def test_parse_only():
    assert parse_only("spec#1,spec#3-5, 9") == [1, 3, 4, 5, 9]
    assert parse_only(None) is None
    with pytest.raises(SystemExit):
        parse_only("spec#999")


def _fake_run(name, results):
    counts = {"pass": 0, "fail": 0, "skip": 0}
    for e in results.values():
        counts[e["result"]] += 1
    return {"name": name, "runtime": f"/x/{name}", "version": f"{name} 1.0", "date": "2026-01-01 00:00 UTC",
            "results": results, "counts": counts}


def test_report_roundtrip_and_compare(tmp_path, items):
    a = _fake_run("pyoci", {str(n): {"result": "pass" if n % 2 else "fail", "detail": "d|x"} for n in items})
    b = _fake_run("runc", {str(n): {"result": "pass", "detail": ""} for n in items})
    out = tmp_path / "conformance.md"
    report.write(str(out), [a, b])
    text = out.read_text()
    assert "| spec#1 |" in text and "| spec#165 |" in text
    assert "## Totals per area" in text
    assert report.passing_items(str(out), "pyoci") == {n for n in items if n % 2}
    assert report.passing_items(str(out), "runc") == set(items)
    with pytest.raises(SystemExit):
        report.passing_items(str(out), "crun")


def test_runner_output_format(monkeypatch, tmp_path):
    """Drive run_items' loop with the real catalogue but stub checks: table rows and the last line."""
    import conformance.__main__ as main
    from conformance import harness

    calls = []

    def ok(ctx):
        calls.append("ok")

    def bad(ctx):
        raise harness.Fail("broken")

    def skip(ctx):
        raise harness.Skip("host")

    monkeypatch.setitem(ITEMS, 5, ITEMS[5].__class__(5, "s", "MUST", "t", "a", None, ok))
    monkeypatch.setitem(ITEMS, 6, ITEMS[6].__class__(6, "s", "MUST", "t", "a", None, bad))
    monkeypatch.setitem(ITEMS, 7, ITEMS[7].__class__(7, "s", "MUST", "t", "a", None, skip))
    monkeypatch.setattr(main, "build_probe", lambda base: base / "probe")
    monkeypatch.setattr(main, "build_rootfs_template", lambda base, probe: base)
    monkeypatch.setattr(main, "load_checks", lambda: ITEMS)
    monkeypatch.setattr(main.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(main, "CGROUP_ROOT", str(tmp_path))
    monkeypatch.setattr(main.tempfile, "mkdtemp", lambda **k: str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    buf = io.StringIO()
    run = main.run_items("/bin/true", [5, 6, 7, 11], out=buf)
    lines = buf.getvalue().strip().splitlines()
    assert lines[-1] == "1 passed, 1 failed, 2 skipped"
    assert re.match(r"^spec#5\s+MUST\s+PASS", lines[2])
    assert re.match(r"^spec#6\s+MUST\s+FAIL\s+broken", lines[3])
    assert re.match(r"^spec#7\s+MUST\s+SKIP\s+host", lines[4])
    assert "not checkable here" in lines[5]
    assert run["counts"] == {"pass": 1, "fail": 1, "skip": 2}
    assert run["results"]["6"] == {"result": "fail", "detail": "broken"}
    assert calls == ["ok"]
    json.dumps(run)


def test_cli_list_needs_no_root():
    p = subprocess.run([sys.executable, "-m", "conformance", "--list"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("spec#")]
    assert len(rows) == 165


def test_crun_wrapper_is_executable():
    w = REPO / "conformance/wrappers/crun"
    assert w.exists() and w.stat().st_mode & 0o111
    assert "--cgroup-manager=disabled" in w.read_text()


RESULTS = REPO / "conformance/results"
HOST_SKIPS = {71, 125, 142}  # no AppArmor/SELinux, no cgroup v2 memory controller on the reference host


@pytest.mark.skipif(not (RESULTS / "mutants.json").exists(), reason="no saved runs")
def test_every_check_was_seen_failing(items):
    """Each check failed at least once: against a real runtime or against the mutant that breaks it."""
    docs = [json.loads(p.read_text()) for p in RESULTS.glob("*.json")]
    runs = [d for d in docs if "results" in d]
    mutants = next(d for d in docs if "mutants" in d)
    ev = report.evidence(runs, mutants)
    never = [n for n, it in items.items() if it.check is not None and not ev[n] and n not in HOST_SKIPS]
    assert not never, f"checks never seen failing: {never}"


@pytest.mark.skipif(not (RESULTS / "mutants.json").exists(), reason="no saved runs")
def test_every_mutant_target_exists(items):
    from conformance.mutant import TARGETS
    for name, targets in TARGETS.items():
        for n in targets:
            assert items[n].check is not None, f"mutant {name} targets spec#{n}, which has no check"


@pytest.mark.skipif(not (RESULTS / "runc.json").exists(), reason="no saved runs")
def test_fails_on_claims_match_saved_runs(items):
    """A check whose note names runc 1.1.5 or crun 1.8.1 as failing it did fail against that runtime."""
    runs = {p.stem: json.loads(p.read_text())["results"] for p in RESULTS.glob("*.json") if p.stem != "mutants"}
    wrong = []
    for n, it in items.items():
        for rt, tag in (("runc", "runc 1.1.5"), ("crun", "crun 1.8.1")):
            if it.check is not None and tag in it.fails_on and rt in runs:
                if runs[rt][str(n)]["result"] != "fail":
                    wrong.append(f"spec#{n} claims {tag} fails it")
    assert not wrong, wrong


@pytest.mark.root
@pytest.mark.skipif(not Path("/usr/sbin/runc").exists(), reason="runc not installed")
def test_runner_end_to_end_against_runc(tmp_path):
    """The real runner (namespace re-exec, probe build, bundles) on two items, and its JSON output."""
    out = tmp_path / "runc.json"
    p = subprocess.run([sys.executable, "-m", "conformance", "--runtime", "/usr/sbin/runc", "--name", "runc",
                        "--only", "spec#13,spec#32,spec#11", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == "2 passed, 0 failed, 1 skipped"
    assert any(re.match(r"^spec#13\s+MUST\s+PASS", ln) for ln in lines)
    data = json.loads(out.read_text())
    assert data["name"] == "runc" and data["results"]["32"]["result"] == "pass"
    assert data["results"]["11"]["result"] == "skip"
