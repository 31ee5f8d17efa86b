"""General rules, bundle, errors, annotations and the State document (spec#1-20)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from ..catalogue import check
from ..harness import Fail, need, parse_mountinfo, tail, wait_for

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


@check(1, fails_on="a runtime that falls back to another file name, such as Config.json")
def config_json_name(ctx):
    b = ctx.bundle(["/bin/true"])
    os.rename(b.path / "config.json", b.path / "Config.json")
    ctx.expect_error(b, "a bundle without config.json (only Config.json)")
    os.rename(b.path / "Config.json", b.path / "config.json")
    rc, _, err, _ = ctx.run(b)
    need(rc == 0, f"the same bundle with config.json did not run: {tail(err)}")


@check(2, fails_on="runc 1.1.5 and crun 1.8.1 accept duplicate member names (Go/yajl keep the last)")
def utf8_no_duplicate_names(ctx):
    b = ctx.bundle(["/bin/true"])
    text = json.dumps(b.config)
    dup = text.replace('"hostname": "conformance"', '"hostname": "conformance", "hostname": "other"', 1)
    need(dup != text, "internal: could not build a duplicate-name config")
    b.write_raw(dup)
    ctx.expect_error(b, "a config object with a duplicated member name (hostname)")
    b2 = ctx.bundle(["/bin/true"])
    raw = json.dumps(b2.config).encode().replace(b'"conformance"', b'"conf\xff\xfeormance"', 1)
    b2.write_raw(raw)
    ctx.expect_error(b2, "a config.json that is not valid UTF-8")


@check(3, fails_on="a runtime that leaves a state entry or mounts behind after a failed create")
def error_leaves_no_trace(ctx):
    before = {m["mountpoint"] for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())}
    b = ctx.bundle(["/bin/true"])
    b.mount(destination="/mnt/missing", type="none", source=str(b.path / "does-not-exist"), options=["bind"])
    with ctx.container(b) as c:
        p = c.create(check=False)
        need(p.returncode != 0, "create accepted a bind mount of a missing source")
        need(c.state_or_none() is None, "a failed create left a container that `state` reports")
        after = {m["mountpoint"] for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())}
        need(after <= before, f"a failed create left mounts in the runtime's namespace: {sorted(after - before)}")
        # the id is still free: a good config under the same id works
        b.config["mounts"].pop()
        b.save()
        c.create()
        c.delete(force=True)


@check(4, fails_on="a runtime that rejects an unknown capability name instead of warning")
def warning_does_not_change_flow(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "echo flow-ok"])
    for k in ("bounding", "permitted", "effective"):
        b.process["capabilities"][k].append("CAP_NOT_A_REAL_CAPABILITY")
    b.save()
    rc, out, err, _ = ctx.run(b)
    need(rc == 0 and "flow-ok" in out,
         f"a config that only deserves a warning (unknown capability) did not run to the end: exit {rc}: {tail(err)}")


@check(5, fails_on="a runtime missing any of the five operations")
def five_operations(ctx):
    b = ctx.bundle(["/bin/sleep", "30"])
    with ctx.container(b) as c:
        c.create()
        need(c.state()["status"] == "created", "state after create is not created")
        c.start()
        c.wait_status("running")
        c.kill("KILL")
        c.wait_status("stopped")
        c.delete()
        need(c.state_or_none() is None, "state still answers after delete")


@check(6, fails_on="a runtime whose operations cannot find a container made by another invocation")
def same_entity_all_operations(ctx):
    b = ctx.bundle(["/bin/sleep", "30"])
    with ctx.container(b) as c:
        c.create()
        for op in (["state", c.id], ["start", c.id], ["state", c.id], ["kill", c.id, "KILL"]):
            p = c.op(*op, check=False)
            need(p.returncode == 0, f"{op[0]} by the creator failed: {tail(p.stderr)}")
        c.wait_status("stopped")
        p = c.op("delete", c.id, check=False)
        need(p.returncode == 0, f"delete by the creator failed: {tail(p.stderr)}")


@check(7, fails_on="a runtime that validates with additionalProperties:false")
def unknown_properties_ignored(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "echo unknown-ok"])
    b.config["org.example.unknownTopLevel"] = {"x": [1, 2]}
    b.process["org.example.unknown"] = True
    b.linux["org.example.unknownLinux"] = "value"
    b.config["mounts"][0]["org.example.unknownMountField"] = 1
    b.save()
    rc, out, err, _ = ctx.run(b)
    need(rc == 0 and "unknown-ok" in out, f"unknown properties were not ignored: exit {rc}: {tail(err)}")


@check(8, fails_on="a runtime that ignores an unknown namespace type")
def invalid_values_rejected(ctx):
    b = ctx.bundle(["/bin/true"])
    b.linux["namespaces"].append({"type": "not-a-namespace"})
    b.save()
    ctx.expect_error(b, "namespace type 'not-a-namespace'")
    b2 = ctx.bundle(["/bin/true"])
    b2.process["user"]["uid"] = "zero"
    b2.save()
    ctx.expect_error(b2, "process.user.uid as a string")


@check(9, fails_on="a runtime that prints a non-SemVer ociVersion in state, or rejects config ociVersion 1.0.0")
def oci_version_semver(ctx):
    for v in ("1.0.0", "1.3.0"):
        b = ctx.bundle(["/bin/sleep", "10"])
        b.config["ociVersion"] = v
        b.save()
        with ctx.container(b) as c:
            p = c.create(check=False)
            need(p.returncode == 0, f"config ociVersion {v} (same major version) was rejected: {tail(p.stderr)}")
            st = c.state()
            need(SEMVER.match(str(st.get("ociVersion", ""))), f"state ociVersion {st.get('ociVersion')!r} is not SemVer")


@check(10, fails_on="a runtime that drops or rejects unknown annotation keys or empty values")
def annotations_map(ctx):
    b = ctx.bundle(["/bin/sleep", "10"])
    ann = {"org.example.conformance.key": "value", "org.example.empty": "", "com.example/odd key": "x y"}
    b.config["annotations"] = ann
    b.save()
    with ctx.container(b) as c:
        c.create()
        got = c.state().get("annotations")
        need(got == ann, f"state annotations {got!r} differ from the config's {ann!r}")
    b2 = ctx.bundle(["/bin/true"])
    b2.config["annotations"] = {"": "empty-key"}
    b2.save()
    ctx.expect_error(b2, "an annotation with an empty key")


@check(12, fails_on="runc 1.1.5 and crun 1.8.1 (kill without a signal sends SIGTERM whatever the annotation)")
def stop_signal_annotation(ctx):
    b = ctx.bundle(["/bin/sh", "-c",
                    "trap 'echo got-USR1 > /tmp/sig; exit 0' USR1; trap 'echo got-TERM > /tmp/sig; exit 0' TERM;"
                    " echo ready > /tmp/ready; while true; do sleep 0.1; done"])
    b.config["annotations"] = {"org.opencontainers.image.stopSignal": "SIGUSR1"}
    b.save()
    with ctx.container(b) as c:
        c.create()
        c.start()
        need(wait_for(lambda: (b.rootfs / "tmp/ready").exists(), 10), "the container never got ready")
        p = c.op("kill", c.id, check=False)
        need(p.returncode == 0, f"kill without a signal failed: {tail(p.stderr)}")
        wait_for(lambda: (b.rootfs / "tmp/sig").exists(), 10)
        got = (b.rootfs / "tmp/sig").read_text().strip() if (b.rootfs / "tmp/sig").exists() else "nothing"
        need(got == "got-USR1", f"stopping the container delivered {got}, not the stopSignal SIGUSR1")


# ------------------------------------------------------------------ State (spec#13-20)

def _state_of_running(ctx, annotations=None, cwd_bundle=False):
    b = ctx.bundle(["/bin/sleep", "30"])
    if annotations is not None:
        b.config["annotations"] = annotations
        b.save()
    c_ctx = ctx.container(b)
    c = c_ctx.__enter__()
    ctx.on_cleanup(lambda: c_ctx.__exit__(None, None, None))
    if cwd_bundle:
        c.create(cwd=str(b.path), bundle_arg=False)
    else:
        c.create()
    return b, c


@check(13, fails_on="a runtime whose state lacks ociVersion")
def state_oci_version(ctx):
    _, c = _state_of_running(ctx)
    st = c.state()
    need(isinstance(st.get("ociVersion"), str) and st["ociVersion"], f"state has no ociVersion: {st}")


@check(14, fails_on="a runtime that accepts a second container with the same id")
def state_id(ctx):
    b, c = _state_of_running(ctx)
    st = c.state()
    need(st.get("id") == c.id, f"state id {st.get('id')!r} is not {c.id!r}")
    b2 = ctx.bundle(["/bin/true"])
    with ctx.container(b2, cid=c.id) as c2:
        c2.cleanup = lambda: None  # never force-delete the first container through the duplicate
        p = c2.create(check=False)
        need(p.returncode != 0, "a second container with the same id was created")


@check(15, fails_on="a runtime reporting a status outside the four values")
def state_status(ctx):
    b, c = _state_of_running(ctx)
    seen = [c.state().get("status")]
    c.start()
    seen.append(c.wait_status("running")["status"])
    c.kill("KILL")
    seen.append(c.wait_status("stopped")["status"])
    need(seen == ["created", "running", "stopped"], f"statuses seen: {seen}")


@check(16, fails_on="a runtime that runs the user program at create (status created with the program's effect)")
def status_meanings(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "touch /tmp/ran; sleep 1; exit 0"])
    with ctx.container(b) as c:
        c.create()
        need(c.state()["status"] == "created", "not created after create")
        need(not (b.rootfs / "tmp/ran").exists(), "the user program ran although the status is created")
        c.start()
        need(wait_for(lambda: (b.rootfs / "tmp/ran").exists(), 10), "the program never ran")
        st = c.state()
        need(st["status"] in ("running", "stopped"), f"status {st['status']} after the program ran")
        c.wait_status("stopped", 15)
        need(not os.path.exists(f"/proc/{st.get('pid')}") or not _alive(st.get("pid")),
             "status stopped while the process is still alive")


def _alive(pid):
    from ..harness import pid_alive
    return bool(pid) and pid_alive(int(pid))


@check(17, fails_on="a runtime whose state pid is missing or is not the container process")
def state_pid(ctx):
    b, c = _state_of_running(ctx)
    st = c.state()
    pid = st.get("pid")
    need(isinstance(pid, int) and pid > 0, f"created state has no pid: {st}")
    need(_alive(pid), f"state pid {pid} is not a live process")
    need(c.pid is None or c.pid == pid, f"state pid {pid} differs from --pid-file {c.pid}")
    c.start()
    st = c.wait_status("running")
    need(st.get("pid") == pid, f"running state pid {st.get('pid')} differs from created pid {pid}")


@check(18, fails_on="a runtime that records a relative bundle path (create run from inside the bundle)")
def state_bundle(ctx):
    b, c = _state_of_running(ctx, cwd_bundle=True)
    st = c.state()
    need(st.get("bundle") == str(b.path.resolve()),
         f"state bundle {st.get('bundle')!r} is not the absolute bundle path {str(b.path)!r}")


@check(19, fails_on="a runtime that invents annotations")
def state_annotations_absent(ctx):
    b, c = _state_of_running(ctx)
    st = c.state()
    need(st.get("annotations") in (None, {}), f"state has annotations although the config has none: {st}")


def _validate_state(st: dict) -> list[str]:
    """state-schema.json's rules, written out (the schema is a test oracle, not part of the project)."""
    problems = []
    for k, t in (("ociVersion", str), ("id", str), ("status", str), ("bundle", str)):
        if not isinstance(st.get(k), t):
            problems.append(f"{k} missing or not a {t.__name__}")
    if st.get("status") not in ("creating", "created", "running", "stopped"):
        problems.append(f"status {st.get('status')!r} not in the enum")
    if "pid" in st and (not isinstance(st["pid"], int) or isinstance(st["pid"], bool) or st["pid"] < 0):
        problems.append("pid is not an integer >= 0")
    if isinstance(st.get("bundle"), str) and not st["bundle"].startswith("/"):
        problems.append("bundle is not absolute")
    ann = st.get("annotations")
    if ann is not None and (not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values())):
        problems.append("annotations is not a string map")
    return problems


def _state_schema():
    """state-schema.json with its defs.json references inlined: the upstream v1.3.0 schema when the
    shared reference copy is on this machine (a test oracle), else the repository's own."""
    d = next((c for c in (Path("/work/shared/oci-runtime-spec/v1.3.0/schema"),
                          Path(__file__).resolve().parents[2] / "oci-schemas")
              if (c / "state-schema.json").exists()), None)
    if d is None:
        return None
    defs = json.loads((d / "defs.json").read_text()).get("definitions", {})

    def inline(x):
        if isinstance(x, dict):
            ref = x.get("$ref", "")
            if ref.startswith(("defs.json#/definitions/", "#/definitions/")):  # state-schema has no own
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in x.items()}
        if isinstance(x, list):
            return [inline(v) for v in x]
        return x
    return inline(json.loads((d / "state-schema.json").read_text()))


@check(20, fails_on="a runtime printing pid as a string or a relative bundle")
def state_schema(ctx):
    b, c = _state_of_running(ctx, annotations={"org.example.a": "b"})
    docs = [c.state()]
    c.start()
    docs.append(c.wait_status("running"))
    c.kill("KILL")
    docs.append(c.wait_status("stopped"))
    for st in docs:
        problems = _validate_state(st)
        try:
            import jsonschema  # optional oracle
            schema = _state_schema()
            if schema is not None:
                jsonschema.validate(st, schema)
        except ImportError:
            pass
        except Exception as e:  # jsonschema.ValidationError
            problems.append(f"schema: {str(e).splitlines()[0]}")
        need(not problems, f"state {st.get('status')}: {'; '.join(problems)}")
