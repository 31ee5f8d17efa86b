"""Images and containers made from them, for real, through the CLI (`runtime` fixture).

One image, many containers: each container writes into its own overlay upper layer; the
image's files never change; `diff` reads the upper layer; `image rm` waits for the last
container. Malicious archives are refused with nothing written outside the store. The bridge
test runs pyoci inside a network namespace the test made (never the machine's own network).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time

import pytest

pytestmark = pytest.mark.root


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def snapshot_tree(root: str) -> dict[str, tuple]:
    """Everything about every entry of a tree that a write could change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [""] + dirnames + filenames:
            p = os.path.join(dirpath, n) if n else dirpath
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                h = os.readlink(p)
            else:
                h = None
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns if not
                        stat.S_ISDIR(st.st_mode) else None, h)
    return out


def overlay_mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(path)]


def wait_for(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def store(runtime) -> str:
    return os.path.join(runtime.root, ".images")


def diff_lines(runtime, cid) -> list[str]:
    return runtime.ok("diff", cid).stdout.splitlines()


# ---------------------------------------------------------------------------------------------
# one image, two containers
# ---------------------------------------------------------------------------------------------
def test_two_containers_from_one_image(runtime):
    runtime.ok("image", "import", "--busybox", "bb")
    img = json.loads(runtime.ok("image", "inspect", "bb").stdout)
    lower = img["rootfs"]
    before = snapshot_tree(lower)
    try:
        runtime.ok("run", "-d", "--image", "bb", "--name", "c1", "--",
                   "sh", "-c", "echo one > /tmp/one.txt && rm /etc/hostname && sleep 60")
        runtime.ok("run", "-d", "--image", "bb", "--name", "c2", "--",
                   "sh", "-c", "echo two > /root/two.txt && sleep 60")
        up1 = os.path.join(store(runtime), "containers", "c1", "upper")
        up2 = os.path.join(store(runtime), "containers", "c2", "upper")
        wait_for(lambda: os.path.exists(os.path.join(up1, "tmp", "one.txt")) and
                 os.path.exists(os.path.join(up1, "etc", "hostname")), what="c1's writes")
        wait_for(lambda: os.path.exists(os.path.join(up2, "root", "two.txt")), what="c2's write")
        assert runtime.state("c1")["annotations"]["org.pyoci.image"] == "bb"

        # diff shows exactly the writes (and the directories they changed), like podman diff
        assert diff_lines(runtime, "c1") == ["C /etc", "D /etc/hostname", "C /tmp", "A /tmp/one.txt"]
        assert diff_lines(runtime, "c2") == ["C /root", "A /root/two.txt"]
        js = json.loads(runtime.ok("diff", "--format", "json", "c1").stdout)
        assert js == {"changed": ["/etc", "/tmp"], "added": ["/tmp/one.txt"], "deleted": ["/etc/hostname"]}

        # each sees its own write and not the other's
        assert runtime.ok("exec", "c1", "cat", "/tmp/one.txt").stdout == "one\n"
        assert runtime.run("exec", "c1", "cat", "/root/two.txt").returncode != 0
        assert runtime.run("exec", "c1", "cat", "/etc/hostname").returncode != 0
        assert runtime.ok("exec", "c2", "cat", "/root/two.txt").stdout == "two\n"
        assert runtime.run("exec", "c2", "cat", "/tmp/one.txt").returncode != 0
        assert runtime.ok("exec", "c2", "cat", "/etc/hostname").stdout == "pyoci\n"

        # the image's files are unchanged
        assert snapshot_tree(lower) == before
        assert not os.path.exists(os.path.join(lower, "tmp", "one.txt"))

        # image rm is refused while either container exists, naming them
        p = runtime.run("image", "rm", "bb")
        assert p.returncode == 1 and "c1, c2" in p.stderr and "in use" in p.stderr
        assert "c1, c2" in runtime.ok("image", "ls").stdout
        runtime.ok("kill", "c1", "KILL")
        runtime.wait_status("c1", "stopped")
        runtime.ok("delete", "c1")
        assert not os.path.exists(os.path.join(store(runtime), "containers", "c1"))
        p = runtime.run("image", "rm", "bb")
        assert p.returncode == 1 and "c2" in p.stderr and "c1" not in p.stderr
        runtime.ok("delete", "--force", "c2")
        assert snapshot_tree(lower) == before
        assert "Deleted: " + img["id"] in runtime.ok("image", "rm", "bb").stdout
        assert runtime.ok("image", "ls", "-q").stdout == ""
    finally:
        for cid in ("c1", "c2"):
            runtime.run("delete", "--force", cid)
    assert overlay_mounts_under(runtime.root) == []
    assert os.listdir(os.path.join(store(runtime), "containers")) == []
    assert os.listdir(os.path.join(store(runtime), "images")) == []


def test_run_in_foreground_and_failed_creates_leave_nothing(runtime, tmp_path):
    runtime.ok("image", "import", "--busybox", "bb")
    p = runtime.run("run", "--image", "bb", "--name", "r1", "--", "sh", "-c", "echo hi; exit 3")
    assert p.returncode == 3 and p.stdout == "hi\n", p.stderr
    assert os.listdir(os.path.join(store(runtime), "containers")) == []

    # the image's Cmd is used without a command; a generated id is reported
    p = runtime.run("run", "--image", "bb", input="echo from-cmd\n")
    assert p.returncode == 0 and "from-cmd" in p.stdout and "container id: bb-" in p.stderr

    # a name already in use: refused, the existing container's layer untouched
    runtime.ok("create", "--image", "bb", "--name", "k1", "--", "true")
    p = runtime.run("create", "--image", "bb", "--name", "k1", "--", "true")
    assert p.returncode == 1 and "exists" in p.stderr
    assert os.path.ismount(os.path.join(store(runtime), "containers", "k1", "merged"))
    runtime.ok("delete", "--force", "k1")

    for args, message in [(("--image", "nope", "--name", "x1"), "image 'nope' not found"),
                          (("--image", "bb", "--name", "x2", "--network", "nat"), "must be bridge"),
                          (("--image", "bb", "--name", "x3", "--bundle", str(tmp_path)), "cannot be used together"),
                          (("--image", "bb", "--name", "x4", "--", "/no/such/binary"), "")]:
        p = runtime.run("run", *args)
        assert p.returncode != 0 and message in p.stderr, (args, p.stderr)
        assert runtime.ids() == []
        assert os.listdir(os.path.join(store(runtime), "containers")) == []
    assert overlay_mounts_under(runtime.root) == []

    # a create killed before it recorded the container leaves a layer nobody owns: reaped
    code = ("import sys; from pyoci import images; "
            "images.prepare_container(sys.argv[1], 'bb', 'orphan', ['true'])")
    subprocess.run([sys.executable, "-c", code, runtime.root],
                   check=True, timeout=60)
    assert overlay_mounts_under(runtime.root)            # mounted, its creator gone
    runtime.ok("image", "rm", "bb")
    assert overlay_mounts_under(runtime.root) == []
    assert os.listdir(os.path.join(store(runtime), "containers")) == []


def test_explain_image_is_the_plan_create_executes(runtime):
    runtime.ok("image", "import", "--busybox", "bb")
    text = runtime.ok("explain", "--image", "bb", "--name", "e1", "--", "sh", "-c", "true").stdout
    for needle in ("Image bb", "lowerdir (read-only, the image)", "create: pid network ipc uts mount cgroup",
                   "mount /proc: proc", "pivot_root into", "Cgroup /pyoci/e1", "Seccomp: none",
                   'args: ["sh", "-c", "true"]'):
        assert needle in text, needle
    planned = json.loads(runtime.ok("explain", "--image", "bb", "--name", "e1", "--format", "json",
                                    "--", "sh", "-c", "true").stdout)
    assert os.listdir(os.path.join(store(runtime), "containers")) == []   # explain made nothing
    runtime.ok("create", "--image", "bb", "--name", "e1", "--", "sh", "-c", "true")
    try:
        st = runtime.state("e1")
        assert st["bundle"] == planned["bundle"]
        actual = json.loads(runtime.ok("explain", "--name", "e1", "--format", "json", st["bundle"]).stdout)
        planned.pop("image")
        assert actual == planned
        with open(os.path.join(st["bundle"], "config.json")) as f:
            cfg = json.load(f)
        assert cfg["root"]["path"] == planned["rootfs"][0]["path"]
        assert os.path.ismount(cfg["root"]["path"])
    finally:
        runtime.ok("delete", "--force", "e1")


# ---------------------------------------------------------------------------------------------
# real image formats, made by umoci and skopeo
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def umoci_image(tmp_path_factory):
    """A two-layer OCI image: layer 2 deletes a directory and a file (whiteouts)."""
    if not (shutil.which("umoci") and shutil.which("skopeo")):
        pytest.skip("umoci and skopeo are needed")
    d = tmp_path_factory.mktemp("umoci")

    def sh(*argv):
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
    lay = str(d / "layout")
    sh("umoci", "init", "--layout", lay)
    sh("umoci", "new", "--image", f"{lay}:t")
    sh("umoci", "unpack", "--image", f"{lay}:t", str(d / "b1"))
    r = d / "b1" / "rootfs"
    shutil.copy2("/bin/busybox", r / "busybox")
    (r / "etc" / "opq").mkdir(parents=True)
    (r / "etc" / "opq" / "a").write_text("a\n")
    (r / "gone").mkdir()
    (r / "gone" / "x").write_text("x\n")
    sh("umoci", "repack", "--image", f"{lay}:t", str(d / "b1"))
    sh("umoci", "unpack", "--image", f"{lay}:t", str(d / "b2"))
    r = d / "b2" / "rootfs"
    shutil.rmtree(r / "gone")
    (r / "etc" / "opq" / "a").unlink()
    (r / "etc" / "opq" / "b").write_text("b\n")
    sh("umoci", "repack", "--image", f"{lay}:t", str(d / "b2"))
    sh("umoci", "config", "--image", f"{lay}:t", "--config.entrypoint", "/busybox",
       "--config.cmd", "sh", "--config.env", "GREETING=hello")
    sh("skopeo", "copy", "-q", f"oci:{lay}:t", f"oci-archive:{d}/img.oci.tar:t")
    sh("skopeo", "copy", "-q", f"oci:{lay}:t", f"docker-archive:{d}/img.docker.tar:localhost/img:t")
    return {"oci-layout": lay, "oci-archive": str(d / "img.oci.tar"),
            "docker-archive": str(d / "img.docker.tar")}


def test_oci_layout_archive_and_docker_archive_give_the_same_image(umoci_image, tmp_path):
    from helpers.runner import Runtime
    trees, ids = {}, set()
    for fmt, path in umoci_image.items():
        rt = Runtime(root=str(tmp_path / fmt))
        out = rt.ok("image", "import", path, "img").stdout
        img = json.loads(rt.ok("image", "inspect", "img").stdout)
        assert img["format"] == fmt and len(img["layers"]) == 2, out
        ids.add(img["id"])
        t = snapshot_tree(img["rootfs"])
        trees[fmt] = {k: v[5] for k, v in t.items()}
        assert "gone" not in t and "gone/x" not in t           # whiteout of a directory
        assert "etc/opq/a" not in t and "etc/opq/b" in t         # whiteout of a file
        if fmt == "docker-archive":
            p = rt.run("run", "--image", "img", "--name", "u1", "--",
                       "sh", "-c", "cat /etc/opq/b; echo $GREETING; /busybox ls /etc/opq")
            assert p.returncode == 0 and p.stdout == "b\nhello\nb\n", p.stderr
            rt.ok("image", "rm", "img")
        rt.cleanup()
    assert len(ids) == 1
    assert trees["oci-layout"] == trees["oci-archive"] == trees["docker-archive"]


def test_image_config_and_file_metadata_reach_the_container(runtime, tmp_path, busybox_rootfs):
    """User, WorkingDir, Env and Cmd of the image config; owners and set-id bits of the layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(busybox_rootfs, arcname=".")
        t, data = _ti("srv", "dir")
        tf.addfile(t)
        t, data = _ti("srv/owned", data=b"x")
        t.uid, t.gid, t.mode = 1234, 4321, 0o4755
        tf.addfile(t, io.BytesIO(data))
    layout = tmp_path / "layout"
    _oci_layout(layout, [buf.getvalue()], config={
        "User": "nobody", "WorkingDir": "/srv", "Env": ["FOO=bar"],
        "Cmd": ["sh", "-c", "echo $(id -u):$(id -g) $(pwd) $FOO $PATH; stat -c '%u %g %a' owned"],
        "StopSignal": "SIGINT"})
    runtime.ok("image", "import", str(layout), "cfg")
    img = json.loads(runtime.ok("image", "inspect", "cfg").stdout)
    st = os.lstat(os.path.join(img["rootfs"], "srv", "owned"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o4755)
    p = runtime.run("run", "--image", "cfg", "--name", "u")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "65534:65534 /srv bar /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "1234 4321 4755"]
    runtime.ok("create", "--image", "cfg", "--name", "s")
    try:
        st = runtime.state("s")
        assert st["annotations"]["org.opencontainers.image.stopSignal"] == "SIGINT"
    finally:
        runtime.ok("delete", "--force", "s")
    runtime.ok("image", "rm", "cfg")


# ---------------------------------------------------------------------------------------------
# malicious archives
# ---------------------------------------------------------------------------------------------
def _ti(name, kind="file", data=b"", target=None):
    t = tarfile.TarInfo(name)
    t.mtime, t.mode = 1_600_000_000, 0o644
    if kind == "file":
        t.size = len(data)
    elif kind == "dir":
        t.type, t.mode = tarfile.DIRTYPE, 0o755
    elif kind == "sym":
        t.type, t.linkname = tarfile.SYMTYPE, target
    elif kind == "hard":
        t.type, t.linkname = tarfile.LNKTYPE, target
    elif kind == "blk":
        t.type, t.devmajor, t.devminor = tarfile.BLKTYPE, 8, 0
    return t, data


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for t, data in entries:
            tf.addfile(t, io.BytesIO(data) if t.isreg() else None)
    return buf.getvalue()


def _oci_layout(path, layers: list[bytes], config: dict | None = None) -> None:
    def put(data: bytes) -> str:
        d = hashlib.sha256(data).hexdigest()
        (path / "blobs" / "sha256" / d).write_bytes(data)
        return "sha256:" + d
    (path / "blobs" / "sha256").mkdir(parents=True)
    descs = []
    for raw in layers:
        gz = gzip.compress(raw)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz),
                      "size": len(gz)})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config or {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(r).hexdigest()
                                                                for r in layers]}}).encode()
    man = json.dumps({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                     "digest": put(cfg), "size": len(cfg)},
                      "layers": descs}).encode()
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(man), "size": len(man)}]}))


def _docker_archive(path, layer_names: list[str], layer_data: dict[str, bytes]) -> None:
    cfg = json.dumps({"os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [
        "sha256:" + hashlib.sha256(layer_data.get(n, b"")).hexdigest() for n in layer_names]}}).encode()
    cname = hashlib.sha256(cfg).hexdigest() + ".json"
    files = {cname: cfg, "manifest.json": json.dumps([{"Config": cname, "RepoTags": ["evil:latest"],
                                                       "Layers": layer_names}]).encode(), **layer_data}
    with tarfile.open(path, "w") as tf:
        for n, data in files.items():
            t = tarfile.TarInfo(n)
            t.size = len(data)
            tf.addfile(t, io.BytesIO(data))


# the store's tmp rootfs is <tmp>/state/.images/tmp/<random>/rootfs: five '..' reach <tmp>
UP = "../../../../../"


def _malicious(kind: str, tmp_path) -> tuple[str, str]:
    """Returns (path to import, the message expected)."""
    out = tmp_path / "outside"
    if kind == "traversal":
        data, msg = _tar([_ti("etc", "dir"), _ti(UP + "outside/pwned", data=b"x")]), "path traversal"
    elif kind == "absolute":
        data, msg = _tar([_ti(str(out / "pwned"), data=b"x")]), "absolute path"
    elif kind == "symlink-abs-then-write":
        data, msg = _tar([_ti("evil", "sym", target=str(out)), _ti("evil/pwned", data=b"x")]), "a symlink to"
    elif kind == "symlink-relative-escape":
        data, msg = _tar([_ti("evil", "sym", target=UP + "outside"), _ti("evil/pwned", data=b"x")]), \
            "points out of the image"
    elif kind == "hardlink-to-host-file":
        data, msg = _tar([_ti("hl", "hard", target=str(tmp_path / "victim")),
                          _ti("hl", data=b"overwritten")]), "absolute path"
    elif kind == "device":
        data, msg = _tar([_ti("dev", "dir"), _ti("dev/sda", "blk")]), "device node"
    elif kind == "whiteout-escape":
        layout = tmp_path / "layout"
        _oci_layout(layout, [_tar([_ti("etc", "dir"), _ti("etc/x", data=b"x")]),
                             _tar([_ti(UP + ".wh.victim")])])
        return str(layout), "path traversal"
    elif kind == "whiteout-dotdot":
        layout = tmp_path / "layout"
        _oci_layout(layout, [_tar([_ti("etc", "dir")]), _tar([_ti("etc/.wh..")])])
        return str(layout), "outside its directory"
    elif kind == "symlink-in-lower-layer":
        layout = tmp_path / "layout"
        _oci_layout(layout, [_tar([_ti("evil", "sym", target=str(out))]),
                             _tar([_ti("evil/pwned", data=b"x")])])
        return str(layout), "pyoci never writes through a link"
    elif kind == "docker-manifest-traversal":
        p = tmp_path / "evil.docker.tar"
        _docker_archive(p, [UP + "victim"], {})
        return str(p), "path traversal"
    else:
        raise AssertionError(kind)
    p = tmp_path / f"{kind}.tar"
    p.write_bytes(data)
    return str(p), msg


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink-abs-then-write",
                                  "symlink-relative-escape", "hardlink-to-host-file", "device",
                                  "whiteout-escape", "whiteout-dotdot", "symlink-in-lower-layer",
                                  "docker-manifest-traversal"])
def test_malicious_archive_refused_nothing_written_outside(runtime, tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "victim").write_text("precious")
    path, message = _malicious(kind, tmp_path)
    os.makedirs(runtime.root, exist_ok=True)
    before = sorted(os.listdir(tmp_path))
    p = runtime.run("image", "import", path, "evil")
    assert p.returncode == 1, p.stdout + p.stderr
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert os.listdir(outside) == []
    assert (tmp_path / "victim").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == before
    assert runtime.ok("image", "ls", "-q").stdout == ""
    assert os.listdir(os.path.join(store(runtime), "tmp")) == []
    assert os.listdir(os.path.join(store(runtime), "images")) == []


# ---------------------------------------------------------------------------------------------
# two containers from one image with their own IPs, in a network namespace the test made
# ---------------------------------------------------------------------------------------------
def test_bridge_two_containers_own_ips(runtime):
    if not shutil.which("nsenter") or not shutil.which("unshare"):
        pytest.skip("util-linux nsenter/unshare needed")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    ns = f"/proc/{holder.pid}/ns/net"

    def pyoci(*args, check=True):
        import tempfile
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.run(["nsenter", f"--net={ns}", *runtime.argv(*args)], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=err, text=True, timeout=60)
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read(), err.read()
        if check and p.returncode != 0:
            raise AssertionError(f"pyoci {args}: {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p
    try:
        wait_for(lambda: os.path.exists(ns) and os.readlink(ns) != os.readlink("/proc/self/ns/net"),
                 what="the test netns")
        pyoci("image", "import", "--busybox", "bb")
        ips = {}
        for cid in ("n1", "n2"):
            pyoci("run", "-d", "--image", "bb", "--name", cid, "--network", "bridge", "--",
                  "sh", "-c", f"echo {cid} > /root/hello && sleep 60")
            ips[cid] = json.loads(pyoci("state", cid).stdout)["annotations"]["org.pyoci.network.ip"]
        assert ips["n1"] != ips["n2"]
        for cid, ip in ips.items():
            assert f"inet {ip}/" in pyoci("exec", cid, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
        p = pyoci("exec", "n2", "ping", "-c", "1", "-W", "2", ips["n1"], check=False)
        assert p.returncode == 0 and f"from {ips['n1']}" in p.stdout, p.stdout + p.stderr
        for cid in ("n1", "n2"):
            up = os.path.join(store(runtime), "containers", cid, "upper")
            wait_for(lambda: os.path.exists(os.path.join(up, "root", "hello")), what=f"{cid}'s write")
            assert {"C /root", "A /root/hello"} <= set(pyoci("diff", cid).stdout.splitlines())
    finally:
        for cid in ("n1", "n2"):
            pyoci("delete", "--force", cid, check=False)
        pyoci("image", "rm", "bb", check=False)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert overlay_mounts_under(runtime.root) == []
