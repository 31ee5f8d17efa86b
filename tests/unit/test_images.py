"""Images: the pure parts (name checks, layer application onto a tmp dir, whiteouts, image
sources, digests, user resolution, container config, diff of an upper dir, explain text).

Nothing here needs root: layers are applied with the test's own uid as owner."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from pyoci import images
from pyoci.images_layers import LayerError, apply_layer_file, check_members, clean_name, symlink_escapes
from pyoci.images_sources import ImageFormatError, open_source

UID, GID = os.getuid(), os.getgid()


# ---------------------------------------------------------------------------------------------
# helpers: write tars and OCI layouts by hand
# ---------------------------------------------------------------------------------------------
def ti(name, kind="file", data=b"", target=None, mode=None):
    t = tarfile.TarInfo(name)
    t.uid, t.gid, t.mtime = UID, GID, 1_600_000_000
    if kind == "file":
        t.type, t.size, t.mode = tarfile.REGTYPE, len(data), 0o644 if mode is None else mode
    elif kind == "dir":
        t.type, t.mode = tarfile.DIRTYPE, 0o755 if mode is None else mode
    elif kind == "sym":
        t.type, t.linkname, t.mode = tarfile.SYMTYPE, target, 0o777
    elif kind == "hard":
        t.type, t.linkname, t.mode = tarfile.LNKTYPE, target, 0o644
    elif kind == "chr":
        t.type, t.devmajor, t.devminor, t.mode = tarfile.CHRTYPE, 1, 3, 0o666
    elif kind == "fifo":
        t.type, t.mode = tarfile.FIFOTYPE, 0o600
    return t, data


def make_tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for t, data in entries:
            tf.addfile(t, io.BytesIO(data) if t.isreg() else None)
    return buf.getvalue()


def apply(root, entries, tmp_path, name="layer.tar"):
    p = tmp_path / name
    p.write_bytes(make_tar(entries))
    apply_layer_file(str(root), str(p), "layer")


def tree(root) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "-> " + os.readlink(p)
            elif os.path.isdir(p):
                out[rel] = "dir"
            elif not os.path.isfile(p):
                out[rel] = "special"
            else:
                with open(p, "rb") as f:
                    out[rel] = f.read().decode()
    return out


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def write_layout(path, layers: list[bytes], config_extra=None, gzip_layers=True, tamper=None):
    """An OCI image layout at `path`; `tamper(blobs)` may alter blob bytes after digesting."""
    os.makedirs(os.path.join(path, "blobs", "sha256"))
    blobs = {}
    descs = []
    for raw in layers:
        data = gzip.compress(raw, mtime=0) if gzip_layers else raw
        d = sha(data)
        blobs[d] = data
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else ""),
                      "digest": d, "size": len(data)})
    cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"], "Env": ["A=1"]},
           "rootfs": {"type": "layers", "diff_ids": [sha(raw) for raw in layers]}}
    cfg.update(config_extra or {})
    cfg_b = json.dumps(cfg).encode()
    blobs[sha(cfg_b)] = cfg_b
    if tamper:
        tamper(blobs, descs)
    man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg_b),
                      "size": len(cfg_b)}, "layers": descs}
    man_b = json.dumps(man).encode()
    blobs[sha(man_b)] = man_b
    for d, data in blobs.items():
        with open(os.path.join(path, "blobs", "sha256", d.split(":")[1]), "wb") as f:
            f.write(data)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(man_b),
             "size": len(man_b), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)
    return sha(cfg_b)


# ---------------------------------------------------------------------------------------------
# names and member checks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, want", [("./a/b", "a/b"), ("a//b/", "a/b"), (".", ""), ("./", ""),
                                        ("a/./b", "a/b")])
def test_clean_name(name, want):
    assert clean_name(name) == want


@pytest.mark.parametrize("name, why", [("/etc/passwd", "absolute"), ("../x", "'..'"),
                                       ("a/../../x", "'..'"), ("a/..", "'..'")])
def test_clean_name_refuses(name, why):
    with pytest.raises(LayerError, match=why):
        clean_name(name)


def test_symlink_escapes():
    assert not symlink_escapes("bin/sh", "busybox")
    assert not symlink_escapes("bin/sh", "/bin/busybox")       # resolved in the container's root
    assert not symlink_escapes("usr/lib/x", "../../lib/y")
    assert symlink_escapes("usr/x", "../../etc/shadow")
    assert symlink_escapes("x", "..")


@pytest.mark.parametrize("entry, message", [
    (ti("../x"), "path traversal"),
    (ti("/abs"), "absolute path"),
    (ti("dev/null", "chr"), "device node"),
    (ti("esc", "sym", target="../../../tmp"), "points out of the image"),
    (ti("hl", "hard", target="/etc/passwd"), "absolute path"),
    (ti("hl", "hard", target="../etc/passwd"), "'..'"),
    (ti("a/.wh.."), "it would remove something outside"),
    (ti("../.wh.x"), "path traversal"),
    (ti(".", "file", b"x"), "would replace the image root"),
])
def test_check_members_refuses(entry, message):
    with pytest.raises(LayerError, match=message):
        check_members([entry[0]])


def test_check_members_classifies_whiteouts():
    acts = check_members([ti("a/.wh.b")[0], ti("d/.wh..wh..opq")[0], ti("d/.wh..wh.plnk")[0], ti("f")[0]])
    assert [a[:2] for a in acts] == [("whiteout", "a/b"), ("opaque", "d"), ("entry", "f")]


# ---------------------------------------------------------------------------------------------
# applying layers
# ---------------------------------------------------------------------------------------------
def test_layers_whiteouts_and_opaque_dirs(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    apply(root, [ti("etc", "dir"), ti("etc/keep", data=b"k"), ti("etc/gone", data=b"g"),
                 ti("opq", "dir"), ti("opq/old", data=b"o"), ti("opq/sub", "dir"),
                 ti("opq/sub/deep", data=b"d"), ti("bin", "dir"), ti("bin/busybox", data=b"BB", mode=0o755),
                 ti("bin/sh", "sym", target="busybox"), ti("bin/ls", "hard", target="bin/busybox"),
                 ti("fifo", "fifo")], tmp_path, "l1.tar")
    # layer 2: a file whiteout, an opaque dir re-filled (its sub dir listed before the marker)
    apply(root, [ti("etc/.wh.gone"), ti("opq/sub", "dir"), ti("opq/sub/new", data=b"n"),
                 ti("opq/.wh..wh..opq"), ti("opq/top", data=b"t"), ti("etc/keep", data=b"k2")],
          tmp_path, "l2.tar")
    t = tree(root)
    assert t == {"etc": "dir", "etc/keep": "k2", "opq": "dir", "opq/sub": "dir", "opq/sub/new": "n",
                 "opq/top": "t", "bin": "dir", "bin/busybox": "BB", "bin/sh": "-> busybox",
                 "bin/ls": "BB", "fifo": "special"}
    assert os.stat(root / "bin" / "ls").st_ino == os.stat(root / "bin" / "busybox").st_ino
    assert os.stat(root / "bin" / "busybox").st_mode & 0o777 == 0o755
    assert os.stat(root / "etc" / "keep").st_mtime == 1_600_000_000
    import stat
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)


def test_file_replaces_lower_symlink_without_following_it(tmp_path):
    root, outside = tmp_path / "rootfs", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "target").write_text("host file")
    apply(root, [ti("link", "sym", target=str(outside / "target"))], tmp_path, "l1.tar")
    apply(root, [ti("link", data=b"new content")], tmp_path, "l2.tar")
    assert (outside / "target").read_text() == "host file"
    assert not os.path.islink(root / "link") and (root / "link").read_text() == "new content"


def test_write_through_a_symlink_is_refused(tmp_path):
    root, outside = tmp_path / "rootfs", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    with pytest.raises(LayerError, match="a symlink to"):
        apply(root, [ti("evil", "sym", target=str(outside)), ti("evil/pwned", data=b"x")], tmp_path)
    assert os.listdir(outside) == []
    # a symlink made by a LOWER layer is not followed either
    with pytest.raises(LayerError, match="pyoci never writes through a link"):
        apply(root, [ti("evil/pwned2", data=b"x")], tmp_path, "l2.tar")
    with pytest.raises(LayerError):
        apply(root, [ti("evil/.wh.something")], tmp_path, "l3.tar")
    assert os.listdir(outside) == []


def test_refused_layer_writes_nothing(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(LayerError, match="path traversal"):
        apply(root, [ti("first", data=b"1"), ti("../escape", data=b"x")], tmp_path)
    assert os.listdir(root) == []          # checked before the first write
    assert not (tmp_path / "escape").exists()


def test_hardlink_to_missing_target_refused(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(LayerError, match="target does not exist"):
        apply(root, [ti("hl", "hard", target="nothere")], tmp_path)


# ---------------------------------------------------------------------------------------------
# sources and import (as the current user: a private root under tmp_path)
# ---------------------------------------------------------------------------------------------
def _two_layers():
    l1 = make_tar([ti("bin", "dir"), ti("bin/sh", data=b"#!sh", mode=0o755), ti("etc", "dir"),
                   ti("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n"),
                   ti("etc/group", data=b"root:x:0:\napp:x:1000:\nwheel:x:10:app\n"),
                   ti("etc/old", data=b"o")])
    l2 = make_tar([ti("etc/.wh.old"), ti("etc/new", data=b"n")])
    return l1, l2


def test_import_oci_layout_dir(tmp_path):
    layout = tmp_path / "layout"
    cfg_digest = write_layout(str(layout), list(_two_layers()), {"config": {
        "Cmd": ["sh"], "Env": ["A=1"], "User": "app", "WorkingDir": "/srv", "StopSignal": "SIGINT"}})
    img = images.import_image(str(tmp_path / "root"), str(layout))
    assert img["id"] == cfg_digest and img["names"] == ["v1"] and img["format"] == "oci-layout"
    assert img["config"]["StopSignal"] == "SIGINT" and img["config"]["User"] == "app"
    rootfs = images.Store(str(tmp_path / "root")).rootfs(img)
    assert sorted(tree(rootfs)) == ["bin", "bin/sh", "etc", "etc/group", "etc/new", "etc/passwd"]
    assert [l["diffID"] for l in img["layers"]] == [sha(x) for x in _two_layers()]
    # same content again under another name: no second copy, one more name
    img2 = images.import_image(str(tmp_path / "root"), str(layout), "other")
    assert img2["id"] == img["id"] and img2["names"] == ["v1", "other"]
    assert len(images.list_images(str(tmp_path / "root"))) == 1
    assert os.listdir(tmp_path / "root" / ".images" / "tmp") == []


def test_import_oci_archive_and_plain_rootfs_tar(tmp_path):
    layout = tmp_path / "layout"
    write_layout(str(layout), list(_two_layers()), gzip_layers=False)
    arch = tmp_path / "img.oci.tar"
    with tarfile.open(arch, "w") as tf:
        for n in sorted(os.listdir(layout)):
            tf.add(layout / n, arcname=n)
    img = images.import_image(str(tmp_path / "root"), str(arch), "arch")
    assert img["format"] == "oci-archive"
    plain = tmp_path / "rootfs.tar.gz"
    plain.write_bytes(gzip.compress(_two_layers()[0]))
    img2 = images.import_image(str(tmp_path / "root"), str(plain))
    assert img2["format"] == "rootfs-tar" and img2["names"] == ["rootfs"]
    assert img2["config"]["Cmd"] == ["/bin/sh"]
    assert "etc/old" in tree(images.Store(str(tmp_path / "root")).rootfs(img2))


@pytest.mark.skipif(not __import__("shutil").which("zstd"), reason="zstd program not installed")
def test_import_zstd_rootfs_tar(tmp_path):
    import subprocess
    raw = tmp_path / "rootfs.tar"
    raw.write_bytes(_two_layers()[0])
    subprocess.run(["zstd", "-q", "-o", str(tmp_path / "rootfs.tar.zst"), str(raw)], check=True, timeout=60)
    img = images.import_image(str(tmp_path / "root"), str(tmp_path / "rootfs.tar.zst"), "z")
    assert img["layers"][0]["diffID"] == sha(_two_layers()[0])
    assert "etc/passwd" in tree(images.Store(str(tmp_path / "root")).rootfs(img))


def test_blob_longer_than_its_descriptor_is_refused(tmp_path):
    def tamper(blobs, descs):
        descs[0]["size"] -= 1
    layout = tmp_path / "layout"
    write_layout(str(layout), [_two_layers()[0]], tamper=tamper)
    with pytest.raises(ImageFormatError, match="the descriptor says"):
        images.import_image(str(tmp_path / "root"), str(layout), "bad")


def test_digest_mismatch_is_refused_and_nothing_kept(tmp_path):
    def tamper(blobs, descs):
        d = descs[0]["digest"]
        blobs[d] = gzip.compress(make_tar([ti("evil", data=b"swapped")]), mtime=0)
    layout = tmp_path / "layout"
    write_layout(str(layout), [_two_layers()[0]], tamper=tamper)
    root = tmp_path / "root"
    with pytest.raises(ImageFormatError, match="does not match its digest"):
        images.import_image(str(root), str(layout), "bad")
    assert images.list_images(str(root)) == []
    assert os.listdir(root / ".images" / "tmp") == []


def test_diff_id_mismatch_is_refused(tmp_path):
    layout = tmp_path / "layout"
    write_layout(str(layout), [_two_layers()[0]],
                 config_extra={"rootfs": {"type": "layers", "diff_ids": [sha(b"other")]}})
    with pytest.raises(ImageFormatError, match="rootfs.diff_ids"):
        images.import_image(str(tmp_path / "root"), str(layout), "bad")


def test_bad_digest_strings_never_become_paths(tmp_path):
    def tamper(blobs, descs):
        descs[0]["digest"] = "sha256/../../../../../../etc/passwd"
    layout = tmp_path / "layout"
    write_layout(str(layout), [_two_layers()[0]], tamper=tamper)
    with pytest.raises(ImageFormatError, match="manifest.layers.0..digest: .* is not a sha256"):
        images.import_image(str(tmp_path / "root"), str(layout), "bad")


def test_not_an_image(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(ImageFormatError, match="OCI image layout"):
        open_source(str(d))
    f = tmp_path / "junk"
    f.write_bytes(b"hello, not a tar at all" * 40)
    with pytest.raises(ImageFormatError, match="not a tar archive"):
        open_source(str(f))


def test_name_checks():
    for good in ("busybox", "localhost/x:t", "a.b/c-d_e:1.0", "img@sha256:abc"):
        images.check_name(good)
    for bad in ("", "-x", "a b", "../x", "a/../b", "x" * 300):
        with pytest.raises(Exception):
            images.check_name(bad)


# ---------------------------------------------------------------------------------------------
# container config, users, diff
# ---------------------------------------------------------------------------------------------
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n"
GROUP = "root:x:0:\nappgrp:x:1001:\nwheel:x:10:app,root\n"


@pytest.mark.parametrize("spec, want", [
    (None, {"uid": 0, "gid": 0, "additionalGids": [10]}),
    ("app", {"uid": 1000, "gid": 1001, "additionalGids": [10]}),
    ("1000", {"uid": 1000, "gid": 1001, "additionalGids": [10]}),
    ("4242", {"uid": 4242, "gid": 0}),
    ("app:wheel", {"uid": 1000, "gid": 10}),
    ("5:7", {"uid": 5, "gid": 7}),
])
def test_resolve_user(spec, want):
    assert images.resolve_user(spec, PASSWD, GROUP) == want


def test_resolve_user_unknown_name():
    with pytest.raises(Exception, match="no such user"):
        images.resolve_user("nobody", PASSWD, GROUP)


IMG = {"id": "sha256:" + "a" * 64, "names": ["demo"],
       "config": {"Env": ["PATH=/bin", "A=1"], "Entrypoint": ["/bin/ep"], "Cmd": ["--serve"],
                  "WorkingDir": "/srv", "StopSignal": "SIGINT"}}


def test_container_config_from_image():
    cfg = images.container_config(IMG, "c1", "/store/c1/merged", network="bridge",
                                  user={"uid": 1000, "gid": 1000})
    p = cfg["process"]
    assert p["args"] == ["/bin/ep", "--serve"] and p["cwd"] == "/srv" and not p["terminal"]
    assert p["env"][:2] == ["PATH=/bin", "A=1"] and "TERM=xterm" in p["env"]
    assert not any(e.startswith("PATH=/usr") for e in p["env"])
    assert p["user"] == {"uid": 1000, "gid": 1000}
    assert cfg["root"] == {"path": "/store/c1/merged", "readonly": False}
    assert cfg["annotations"]["org.pyoci.image"] == "demo"
    assert cfg["annotations"]["org.pyoci.network"] == "bridge"
    assert cfg["annotations"]["org.opencontainers.image.stopSignal"] == "SIGINT"
    assert cfg["hostname"] == "c1"
    assert "CAP_NET_RAW" in p["capabilities"]["effective"]          # ping in bridge mode
    assert "CAP_NET_RAW" not in images.container_config(IMG, "c1", "/m")["process"]["capabilities"]["bounding"]
    # the command line replaces Cmd, never Entrypoint
    assert images.container_config(IMG, "c1", "/m", cmd=["x"])["process"]["args"] == ["/bin/ep", "x"]
    host = images.container_config(IMG, "c1", "/m", network="host")
    assert "network" not in {n["type"] for n in host["linux"]["namespaces"]}
    assert "org.pyoci.network" not in images.container_config(IMG, "c1", "/m")["annotations"]
    with pytest.raises(Exception, match="must be bridge, none or host"):
        images.container_config(IMG, "c1", "/m", network="nat")
    with pytest.raises(Exception, match="no Cmd or Entrypoint"):
        images.container_config({"id": IMG["id"], "names": ["e"], "config": {}}, "c1", "/m")


def test_container_config_is_valid():
    from pyoci import spec
    spec.validate_config(images.container_config(IMG, "c1", "/store/c1/merged", network="bridge"))


def test_diff_layers_added_changed_and_whiteout_files(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in ("etc", "tmp", "usr/lib"):
        (lower / d).mkdir(parents=True)
    (lower / "etc" / "hosts").write_text("x")
    (lower / "etc" / "old").write_text("x")
    (lower / "lib").symlink_to("usr/lib")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "hosts").write_text("y")           # changed
    (upper / "etc" / ".wh.old").write_text("")          # deleted (whiteout as a file)
    (upper / "tmp" / "new").mkdir(parents=True)         # added dir inside a changed dir
    (upper / "tmp" / "new" / "f").write_text("z")
    (upper / "lib").mkdir()                              # a dir replacing the image's symlink
    (upper / "lib" / "x").write_text("z")
    assert images.diff_layers(str(upper), str(lower)) == [
        ("C", "/etc"), ("C", "/etc/hosts"), ("D", "/etc/old"), ("C", "/lib"), ("A", "/lib/x"),
        ("C", "/tmp"), ("A", "/tmp/new"), ("A", "/tmp/new/f")]


# ---------------------------------------------------------------------------------------------
# explain: text rendering of a real plan (no container made)
# ---------------------------------------------------------------------------------------------
def test_render_text_of_a_plan(tmp_path):
    from pyoci import cli_images
    from pyoci.plan import Options, build_plan
    from pyoci.specgen import default_config
    cfg = default_config(terminal=False)
    cfg["hooks"] = {"prestart": [{"path": "/bin/true"}]}
    (tmp_path / "rootfs").mkdir()
    plan = build_plan(cfg, Options(container_id="c1", bundle=str(tmp_path), root_dir="/run/pyoci"))
    d = plan.describe()
    d["cgroup"] = {"path": "/pyoci/c1", "dir": "/sys/fs/cgroup/pyoci/c1", "controllers": ["pids"],
                   "files": {"pids.max": "10"}, "deviceRules": 1, "then": "the init pid is written"}
    text = cli_images.render_text(d)
    for needle in ("create: pid network ipc uts mount cgroup", "mount /proc: proc from proc",
                   "mount /sys: sysfs from sysfs flags ro,nosuid,nodev,noexec", "device /dev/null c 1:3",
                   "pivot_root into", "mask /proc/kcore", "read-only /proc/sys",
                   "bounding    CAP_", "writes pids.max = 10", "prestart: /bin/true",
                   "Seccomp: none", "Network: loopback only"):
        assert needle in text, needle
