"""Images and the containers made from them: a read-only image, a thin writable layer each.

Store layout, under the runtime's --root (see docs/images.md):

    <root>/.images/
      lock                            flock: import commits, rm, container layers
      tmp/<random>/                   imports in progress (removed when they end)
      images/<hex id>/image.json      names, the image config (Env, Cmd, Entrypoint, ...), layers
      images/<hex id>/config.json     the image's config blob as imported (verified)
      images/<hex id>/rootfs/         all layers applied in order: the READ-ONLY lower layer
      containers/<id>/container.json  which image, who made it
      containers/<id>/upper, work     the container's own layer (overlayfs upperdir/workdir)
      containers/<id>/merged          the overlay mount = the container's root.path
      containers/<id>/bundle/         config.json of the OCI bundle pyoci create runs

The overlay is mounted by `pyoci create --image` in the caller's mount namespace (the container
inherits it through its rootfs bind) and unmounted by `delete` (`on_delete`). An image is in
use while a container layer names it; `remove_image` refuses then and names the containers.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time

from pyoci.errors import AlreadyExists, PyociError, StageError, UsageError

# import/extraction code (tarfile, the sources) loads only when an image is imported: the
# container paths (create --image, delete, diff) stay light


def __getattr__(name):  # ImageFormatError etc. for callers that expect them here
    if name in ("ImageFormatError", "open_source"):
        from pyoci import images_sources
        return getattr(images_sources, name)
    raise AttributeError(name)

STORE = ".images"
ANN_IMAGE = "org.pyoci.image"
ANN_IMAGE_ID = "org.pyoci.image.id"
ANN_STOP_SIGNAL = "org.opencontainers.image.stopSignal"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
OVERLAY_OPTS = "index=off,redirect_dir=off,metacopy=off"
STAGE = "image"


class ImageNotFound(PyociError):
    def __init__(self, ref: str):
        super().__init__(f"image {ref!r} not found (pyoci image ls lists the images; "
                         "pyoci image import FILE|DIR [NAME] adds one)")


class ImageInUse(PyociError):
    def __init__(self, ref: str, users: list[str]):
        self.users = users
        super().__init__(f"image {ref!r} is in use by container(s) {', '.join(users)}: "
                         f"delete them first (pyoci delete {' '.join(users)})")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json(path: str, data) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.rename(tmp, path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise UsageError(f"invalid image name {name!r}: use letters, digits and . _ / : @ + - "
                         "(at most 255, starting with a letter or digit)")
    return name


# ─────────────────────────────── the store ───────────────────────────────

class Store:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.dir = os.path.join(self.root, STORE)
        self.images_dir = os.path.join(self.dir, "images")
        self.containers_dir = os.path.join(self.dir, "containers")
        self.tmp_dir = os.path.join(self.dir, "tmp")

    def ensure(self) -> None:
        os.makedirs(self.root, 0o711, exist_ok=True)
        for d in (self.dir, self.images_dir, self.containers_dir, self.tmp_dir):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass

    @contextlib.contextmanager
    def lock(self):
        self.ensure()
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- images ----
    def image_dir(self, image_id: str) -> str:
        return os.path.join(self.images_dir, image_id.split(":", 1)[-1])

    def images(self) -> list[dict]:
        out = []
        try:
            names = sorted(os.listdir(self.images_dir))
        except FileNotFoundError:
            return []
        for h in names:
            try:
                out.append(_read_json(os.path.join(self.images_dir, h, "image.json")))
            except (OSError, ValueError):
                continue
        return out

    def find(self, ref: str) -> dict:
        imgs = self.images()
        for img in imgs:
            if ref in img.get("names", []):
                return img
        r = ref.removeprefix("sha256:")
        if re.fullmatch(r"[0-9a-f]{6,64}", r):
            hits = [i for i in imgs if i["id"].split(":", 1)[1].startswith(r)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise UsageError(f"image id prefix {ref!r} is ambiguous")
        if ":" not in ref:
            for img in imgs:
                if f"{ref}:latest" in img.get("names", []):
                    return img
        raise ImageNotFound(ref)

    def rootfs(self, img: dict) -> str:
        return os.path.join(self.image_dir(img["id"]), "rootfs")

    # ---- containers ----
    def container_dir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def containers(self) -> list[dict]:
        out = []
        try:
            names = sorted(os.listdir(self.containers_dir))
        except FileNotFoundError:
            return []
        for cid in names:
            try:
                out.append(_read_json(os.path.join(self.containers_dir, cid, "container.json")))
            except (OSError, ValueError):
                out.append({"id": cid, "image": None, "imageId": None, "broken": True})
        return out

    def _orphan(self, meta: dict) -> bool:
        """A container layer nobody owns: no container state and its creator is gone (a
        `create` that failed before the container was recorded)."""
        from pyoci.state import proc_start_time
        if os.path.isdir(os.path.join(self.root, meta["id"])):
            return False
        c = meta.get("creator") or {}
        if c.get("pid") and proc_start_time(c["pid"]) == c.get("start"):
            return False
        return True

    def reap_orphans(self) -> list[str]:
        """Remove container layers left by failed creates. Call with the lock held."""
        done = []
        for meta in self.containers():
            if self._orphan(meta):
                try:
                    release_layer(self, meta["id"])
                    done.append(meta["id"])
                except PyociError:
                    pass
        return done

    def users(self, img: dict) -> list[str]:
        return sorted(m["id"] for m in self.containers() if m.get("imageId") == img["id"])


# ─────────────────────────────── import ───────────────────────────────

def _hash_copy(src, dst_path: str, alg: str = "sha256", limit: int | None = None) -> tuple[str, str, int]:
    """Copy a stream to a new file (at most `limit` bytes); returns (alg digest, sha256
    digest, size)."""
    h, h256, n = hashlib.new(alg), hashlib.sha256(), 0
    with open(dst_path, "xb") as out:
        while limit is None or n < limit:
            chunk = src.read(1 << 20 if limit is None else min(1 << 20, limit - n))
            if not chunk:
                break
            h.update(chunk)
            if alg != "sha256":
                h256.update(chunk)
            out.write(chunk)
            n += len(chunk)
    if alg == "sha256":
        h256 = h
    return f"{alg}:{h.hexdigest()}", f"sha256:{h256.hexdigest()}", n


def _fetch(blob, dst: str) -> tuple[str, int]:
    """Copy `blob` to `dst` and verify its digest and size. Returns (digest, size)."""
    from pyoci.images_sources import ImageFormatError
    alg = blob.digest.split(":", 1)[0] if blob.digest else "sha256"
    # a descriptor's size bounds the read (one byte more, to notice a longer blob)
    limit = blob.size + 1 if isinstance(blob.size, int) and blob.size >= 0 else None
    with blob.open() as src:
        got, got256, size = _hash_copy(src, dst, alg, limit)
    if blob.digest and got != blob.digest:
        raise ImageFormatError(f"{blob.what}: content does not match its digest "
                               f"(expected {blob.digest}, got {got})")
    if isinstance(blob.size, int) and blob.size != size:
        raise ImageFormatError(f"{blob.what}: {size} bytes, the descriptor says {blob.size}")
    return got, size


def _compression(path: str) -> str | None:
    from pyoci.images_sources import COMPRESSION_MAGIC
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, kind in COMPRESSION_MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def _decompress(path: str, kind: str, out_path: str, what: str) -> None:
    from pyoci.images_sources import ImageFormatError
    if kind == "zstd":
        import subprocess
        zstd = shutil.which("zstd")
        if not zstd:
            raise ImageFormatError(f"{what}: zstd-compressed and the zstd program is not installed")
        with open(out_path, "xb") as out:
            p = subprocess.run([zstd, "-d", "-c", "-q", path], stdout=out, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise ImageFormatError(f"{what}: zstd: {p.stderr.decode(errors='replace').strip()}")
        return
    import bz2
    import gzip
    import lzma
    opener = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[kind]
    try:
        with opener(path, "rb") as src, open(out_path, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise ImageFormatError(f"{what}: cannot decompress ({kind}): {e}") from None


def _layer_tar(blob, work: str, i: int) -> tuple[str, str, str, int]:
    """Fetch and verify a layer; returns (uncompressed tar path, digest, diff id, size)."""
    raw = os.path.join(work, f"blob-{i}")
    digest, size = _fetch(blob, raw)
    kind = _compression(raw)
    if kind is None:
        with open(raw, "rb") as f:
            diff_id = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        return raw, digest, diff_id, size
    tar = os.path.join(work, f"layer-{i}.tar")
    _decompress(raw, kind, tar, blob.what)
    os.unlink(raw)
    with open(tar, "rb") as f:
        diff_id = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    return tar, digest, diff_id, size


def _tree_size(path: str) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total


def _commit(store: Store, work: str, meta: dict, name: str) -> dict:
    """Move a fully built image from tmp into the store under `name` (lock held by caller)."""
    for img in store.images():
        if name in img.get("names", []) and img["id"] != meta["id"]:
            raise PyociError(f"image name {name!r} is already used by image {img['id'][:19]}: "
                             f"remove it first (pyoci image rm {name}) or choose another name")
    dest = store.image_dir(meta["id"])
    if os.path.isdir(dest):
        existing = _read_json(os.path.join(dest, "image.json"))
        if name not in existing["names"]:
            existing["names"].append(name)
            _write_json(os.path.join(dest, "image.json"), existing)
        return existing
    meta["names"] = [name]
    _write_json(os.path.join(work, "image.json"), meta)
    rootfs = os.path.join(work, "rootfs")
    os.chmod(rootfs, os.lstat(rootfs).st_mode & 0o7777)
    os.rename(work, dest)
    return meta


def _exec_config(cfg: dict) -> dict:
    c = cfg.get("config") or {}
    keep = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "StopSignal", "Labels", "ExposedPorts",
            "Volumes")
    return {k: c[k] for k in keep if c.get(k) not in (None, [], {}, "")}


def import_image(root: str, path: str, name: str | None = None) -> dict:
    """Import an OCI layout (dir or archive), a docker-archive or a plain rootfs tar. Every
    blob is copied into the store's tmp dir and verified before use; layers are applied in
    order with whiteouts. Returns the image record (image.json)."""
    import tarfile
    from pyoci.images_sources import ImageFormatError, open_source
    if name is not None:
        check_name(name)
    store = Store(root)
    store.ensure()
    try:
        src = open_source(path)
    except OSError as e:
        raise ImageFormatError(f"{path}: {e.strerror or e}") from None
    work = os.path.join(store.tmp_dir, secrets.token_hex(8))
    os.mkdir(work, 0o700)
    try:
        return _import(store, src, work, name)
    except (OSError, EOFError, tarfile.TarError) as e:
        what = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
        raise ImageFormatError(f"{src.path}: import failed: {what}") from None
    finally:
        src.close()
        if os.path.isdir(work):
            shutil.rmtree(work, ignore_errors=True)


def _import(store: Store, src, work: str, name: str | None) -> dict:
    from pyoci.images_layers import apply_layer_file
    from pyoci.images_sources import ImageFormatError, check_digest, machine_arch
    default = name
    if default is None and src.default_name:
        try:
            default = check_name(src.default_name)
        except UsageError:
            default = None
    cfg_bytes = None
    cfg: dict = {}
    if src.config is not None:
        p = os.path.join(work, "config.json")
        _fetch(src.config, p)
        with open(p, "rb") as f:
            cfg_bytes = f.read()
        try:
            cfg = json.loads(cfg_bytes)
        except ValueError as e:
            raise ImageFormatError(f"{src.path}: image config: invalid JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise ImageFormatError(f"{src.path}: image config is not a JSON object")
    diff_ids = (cfg.get("rootfs") or {}).get("diff_ids")
    if src.config is not None:
        if not isinstance(diff_ids, list) or len(diff_ids) != len(src.layers):
            raise ImageFormatError(f"{src.path}: image config rootfs.diff_ids lists "
                                   f"{len(diff_ids or [])} layers, the manifest {len(src.layers)}")
        for i, d in enumerate(diff_ids):
            check_digest(d, f"config rootfs.diff_ids[{i}]")
        image_id = "sha256:" + hashlib.sha256(cfg_bytes).hexdigest()
        final = check_name(default or image_id.split(":")[1][:12])
        for img in store.images():          # refuse a taken name before the work, not after
            if final in img.get("names", []) and img["id"] != image_id:
                raise PyociError(f"image name {final!r} is already used by image {img['id'][:19]}: "
                                 f"remove it first (pyoci image rm {final}) or choose another name")
        if os.path.isdir(store.image_dir(image_id)):
            with store.lock():
                return _commit(store, work, {"id": image_id}, final)
    rootfs = os.path.join(work, "rootfs")
    os.mkdir(rootfs, 0o755)
    layers = []
    for i, blob in enumerate(src.layers):
        tar, digest, diff_id, size = _layer_tar(blob, work, i)
        if diff_ids is not None and diff_ids[i] != diff_id:
            raise ImageFormatError(f"{blob.what}: uncompressed content does not match "
                                   f"rootfs.diff_ids[{i}] (expected {diff_ids[i]}, got {diff_id})")
        apply_layer_file(rootfs, tar, blob.what)
        os.unlink(tar)
        layers.append({"digest": digest, "diffID": diff_id, "size": size,
                       **({"mediaType": blob.media_type} if blob.media_type else {})})
    if src.config is None:
        env = [f"PATH={_default_path()}"]
        cmd = ["/bin/sh"] if os.path.lexists(os.path.join(rootfs, "bin", "sh")) else []
        cfg = {"architecture": machine_arch(), "os": "linux",
               "config": {"Env": env, **({"Cmd": cmd} if cmd else {})},
               "rootfs": {"type": "layers", "diff_ids": [l["diffID"] for l in layers]},
               "history": [{"created_by": f"pyoci image import {os.path.basename(src.path)}"}]}
        cfg_bytes = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
        with open(os.path.join(work, "config.json"), "wb") as f:
            f.write(cfg_bytes)
        image_id = "sha256:" + hashlib.sha256(cfg_bytes).hexdigest()
    meta = {"id": image_id, "format": src.format, "source": src.path, "imported": _now(),
            "created": cfg.get("created"), "architecture": cfg.get("architecture"),
            "os": cfg.get("os"), "config": _exec_config(cfg), "layers": layers,
            "size": _tree_size(rootfs), "notes": src.notes}
    final = check_name(default or image_id.split(":")[1][:12])
    with store.lock():
        return _commit(store, work, meta, final)


def _default_path() -> str:
    from pyoci.specgen import DEFAULT_PATH
    return DEFAULT_PATH


def import_busybox(root: str, name: str = "busybox", busybox: str | None = None) -> dict:
    """The default image: a root filesystem made from Debian's busybox-static."""
    from pyoci.images_sources import machine_arch
    from pyoci.specgen import BUSYBOX, make_busybox_rootfs
    check_name(name)
    busybox = busybox or BUSYBOX
    if not os.path.exists(busybox):
        raise PyociError(f"{busybox} not found: install Debian's busybox-static (apt-get install busybox-static)")
    with open(busybox, "rb") as f:
        bb_digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    cfg = {"architecture": machine_arch(), "os": "linux",
           "config": {"Env": [f"PATH={_default_path()}"], "Cmd": ["sh"], "WorkingDir": "/"},
           "rootfs": {"type": "layers", "diff_ids": []},
           "history": [{"created_by": f"pyoci image import --busybox ({busybox} {bb_digest})"}]}
    cfg_bytes = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    image_id = "sha256:" + hashlib.sha256(cfg_bytes).hexdigest()
    store = Store(root)
    store.ensure()
    work = os.path.join(store.tmp_dir, secrets.token_hex(8))
    os.mkdir(work, 0o700)
    try:
        with open(os.path.join(work, "config.json"), "wb") as f:
            f.write(cfg_bytes)
        rootfs = os.path.join(work, "rootfs")
        if not os.path.isdir(store.image_dir(image_id)):
            make_busybox_rootfs(rootfs, busybox)
            os.chmod(rootfs, 0o755)
        meta = {"id": image_id, "format": "busybox", "source": busybox, "imported": _now(),
                "created": None, "architecture": cfg["architecture"], "os": "linux",
                "config": _exec_config(cfg), "layers": [],
                "size": _tree_size(rootfs), "notes": [f"built from {busybox} ({bb_digest})"]}
        with store.lock():
            return _commit(store, work, meta, name)
    finally:
        if os.path.isdir(work):
            shutil.rmtree(work, ignore_errors=True)


def list_images(root: str) -> list[dict]:
    store = Store(root)
    out = []
    for img in store.images():
        out.append(dict(img, containers=store.users(img)))
    return out


def inspect_image(root: str, ref: str) -> dict:
    store = Store(root)
    img = store.find(ref)
    out = dict(img, rootfs=store.rootfs(img), containers=store.users(img))
    try:
        out["imageConfig"] = _read_json(os.path.join(store.image_dir(img["id"]), "config.json"))
    except (OSError, ValueError):
        pass
    return out


def remove_image(root: str, ref: str) -> dict:
    """Remove a name (the image's files go with its last name). Refused while any container
    uses the image."""
    store = Store(root)
    with store.lock():
        store.reap_orphans()
        img = store.find(ref)
        users = store.users(img)
        if users:
            raise ImageInUse(ref, users)
        names = list(img.get("names", []))
        if ref in names and len(names) > 1:
            names.remove(ref)
            img["names"] = names
            _write_json(os.path.join(store.image_dir(img["id"]), "image.json"), img)
            return {"untagged": [ref], "deleted": None}
        d = store.image_dir(img["id"])
        # rename first so a half-removed image is never found by name
        gone = os.path.join(store.tmp_dir, "rm-" + secrets.token_hex(6))
        os.rename(d, gone)
    shutil.rmtree(gone)
    return {"untagged": names, "deleted": img["id"]}


# ─────────────────────────────── containers ───────────────────────────────

def read_in_rootfs(rootfs: str, path: str, limit: int = 1 << 20) -> str | None:
    """Read a small file of an image, resolving symlinks as if `rootfs` were "/"."""
    from pyoci.errors import SyscallError
    from pyoci.linux import libc
    try:
        dfd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = libc.openat2(dfd, path.lstrip("/"), os.O_RDONLY,
                          resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
    except SyscallError:
        return None
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def resolve_user(spec: str | None, passwd: str | None, group: str | None) -> dict:
    """An image `User` ("name", "uid", "name:group", "uid:gid", ...) → OCI process.user,
    using the image's /etc/passwd and /etc/group (pure)."""
    if not spec:
        spec = "0"
    u, _, g = spec.partition(":")
    pw = [l.split(":") for l in (passwd or "").splitlines() if l.count(":") >= 6]
    gr = [l.split(":") for l in (group or "").splitlines() if l.count(":") >= 3]
    entry = None
    if u.isdigit():
        uid = int(u)
        entry = next((e for e in pw if e[2] == u), None)
    else:
        entry = next((e for e in pw if e[0] == u), None)
        if entry is None:
            raise UsageError(f"image user {u!r}: no such user in the image's /etc/passwd")
        uid = int(entry[2])
    if g:
        if g.isdigit():
            gid = int(g)
        else:
            ge = next((e for e in gr if e[0] == g), None)
            if ge is None:
                raise UsageError(f"image group {g!r}: no such group in the image's /etc/group")
            gid = int(ge[2])
    else:
        gid = int(entry[3]) if entry else 0
    user = {"uid": uid, "gid": gid}
    if entry and not g:
        extra = sorted({int(e[2]) for e in gr if entry[0] in e[3].split(",") and int(e[2]) != gid})
        if extra:
            user["additionalGids"] = extra
    return user


def _merge_env(image_env: list[str], defaults: list[str]) -> list[str]:
    keys = {e.split("=", 1)[0] for e in image_env}
    return list(image_env) + [e for e in defaults if e.split("=", 1)[0] not in keys]


def container_config(img: dict, cid: str, rootfs_path: str, cmd: list[str] | None = None,
                     network: str | None = None, user: dict | None = None) -> dict:
    """The config.json of a container made from `img` (pure): `pyoci spec` defaults plus the
    image config; root is the container's overlay (`rootfs_path`), writable."""
    from pyoci.specgen import default_config
    cfg = default_config(terminal=False)
    ic = img.get("config") or {}
    name = (img.get("names") or [img["id"]])[0]
    entry = list(ic.get("Entrypoint") or [])
    args = entry + (list(cmd) if cmd else list(ic.get("Cmd") or []))
    if not args:
        raise UsageError(f"image {name!r} has no Cmd or Entrypoint: give the command after --, "
                         f"e.g. pyoci run --image {name} -- sh")
    proc = cfg["process"]
    proc["args"] = args
    proc["env"] = _merge_env(list(ic.get("Env") or []), proc["env"] + [f"HOSTNAME={cid[:63]}"])
    proc["cwd"] = ic.get("WorkingDir") or "/"
    if user is not None:
        proc["user"] = user
    cfg["root"] = {"path": rootfs_path, "readonly": False}
    cfg["hostname"] = cid[:63]
    ann = {ANN_IMAGE: name, ANN_IMAGE_ID: img["id"]}
    if ic.get("StopSignal"):
        ann[ANN_STOP_SIGNAL] = str(ic["StopSignal"])
    if network in (None, "", "none"):
        pass
    elif network == "bridge":
        ann["org.pyoci.network"] = "bridge"
        # ping works: ICMP echo sockets for every group (as podman sets it) and, for tools that
        # only use raw sockets (busybox ping), CAP_NET_RAW as in Docker's default set; both only
        # reach the container's own network namespace
        cfg["linux"].setdefault("sysctl", {})["net.ipv4.ping_group_range"] = "0 2147483647"
        caps = proc["capabilities"]
        for kind in ("bounding", "effective", "permitted"):
            caps[kind] = list(caps.get(kind) or []) + ["CAP_NET_RAW"]
    elif network == "host":
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    else:
        raise UsageError(f"--network {network!r}: must be bridge, none or host")
    cfg["annotations"] = ann
    return cfg


def _mounted(path: str) -> bool:
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == path:
                    return True
    except OSError:
        pass
    return False


def mount_overlay(lower: str, upper: str, work: str, merged: str) -> None:
    from pyoci.linux import libc
    from pyoci.errors import SyscallError
    for p in (lower, upper, work):
        if any(c in p for c in ",:\\") or any(c.isspace() for c in p):
            raise StageError(STAGE, f"overlay: path {p!r} holds ',', ':', '\\' or a space, which "
                             "overlayfs options cannot carry: choose a --root without them")
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    try:
        libc.mount("overlay", merged, "overlay", libc.MS_NODEV, f"{data},{OVERLAY_OPTS}")
    except SyscallError as e:
        if e.errno != errno.EINVAL:
            raise e.with_stage(STAGE)
        libc.mount("overlay", merged, "overlay", libc.MS_NODEV, data)


def unmount(merged: str) -> None:
    from pyoci.linux import libc
    from pyoci.errors import SyscallError
    for _ in range(8):
        if not _mounted(merged):
            return
        try:
            libc.umount2(merged, 0)
        except SyscallError as e:
            if e.errno == errno.EINVAL:
                return
            if e.errno != errno.EBUSY:
                raise e.with_stage(STAGE)
            libc.umount2(merged, libc.MNT_DETACH)
    if _mounted(merged):
        raise StageError(STAGE, f"{merged} is still mounted")


def release_layer(store: Store, cid: str) -> None:
    """Unmount the container's overlay and remove its layer (lock held by the caller)."""
    d = store.container_dir(cid)
    merged = os.path.join(d, "merged")
    if os.path.isdir(merged):
        unmount(merged)
        if os.path.ismount(merged):
            raise StageError(STAGE, f"{merged} is still mounted: its layer is kept")
    if os.path.isdir(d):
        shutil.rmtree(d)


def prepare_container(root: str, ref: str, cid: str, cmd: list[str] | None = None,
                      network: str | None = None) -> str:
    """Make the container's layer (upper, work), its bundle, and mount the overlay at
    `merged`. Returns the bundle directory."""
    from pyoci.state import proc_start_time, validate_id
    from pyoci.specgen import default_config  # noqa: F401  (fail early if missing)
    validate_id(cid)
    store = Store(root)
    if os.path.exists(os.path.join(store.root, cid)):
        raise AlreadyExists(cid)
    with store.lock():
        store.reap_orphans()
        img = store.find(ref)
        d = store.container_dir(cid)
        if os.path.exists(d):
            raise AlreadyExists(cid)
        os.mkdir(d, 0o700)
        try:
            for sub in ("upper", "work", "merged", "bundle"):
                os.mkdir(os.path.join(d, sub), 0o755 if sub in ("upper", "merged") else 0o700)
            lower = store.rootfs(img)
            _write_json(os.path.join(d, "container.json"), {
                "id": cid, "image": (img.get("names") or [img["id"]])[0], "imageId": img["id"],
                "created": _now(), "creator": {"pid": os.getpid(), "start": proc_start_time(os.getpid())}})
            ic = img.get("config") or {}
            user = None
            if ic.get("User"):
                user = resolve_user(ic["User"], read_in_rootfs(lower, "etc/passwd"),
                                    read_in_rootfs(lower, "etc/group"))
            merged = os.path.join(d, "merged")
            cfg = container_config(img, cid, merged, cmd, network, user)
            bundle = os.path.join(d, "bundle")
            _write_json(os.path.join(bundle, "config.json"), cfg)
            mount_overlay(lower, os.path.join(d, "upper"), os.path.join(d, "work"), merged)
        except BaseException:
            try:
                release_layer(store, cid)
            except PyociError:
                pass
            raise
    return bundle


def on_delete(root_dir: str, container_id: str, data: dict) -> None:
    """container.delete: unmount the overlay, remove the container's layer, release the image."""
    store = Store(root_dir)
    if not os.path.isdir(store.container_dir(container_id)):
        return
    with store.lock():
        release_layer(store, container_id)


# ─────────────────────────────── diff ───────────────────────────────

def _lower_entry(lower: str, rel: str) -> os.stat_result | None:
    """lstat of `rel` in the image, without following any symlink on the way."""
    parts = [p for p in rel.split("/") if p]
    cur = lower
    for i, p in enumerate(parts):
        cur = os.path.join(cur, p)
        try:
            st = os.lstat(cur)
        except OSError:
            return None
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return None
    return os.lstat(lower) if not parts else st


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def diff_layers(upper: str, lower: str) -> list[tuple[str, str]]:
    """What an overlay upper layer changes on top of `lower`: sorted (kind, path) with kind
    A (added), C (changed) or D (deleted), like `podman diff`."""
    out: dict[str, str] = {}

    def walk(rel: str) -> None:
        here = os.path.join(upper, rel) if rel else upper
        for name in sorted(os.listdir(here)):
            r = f"{rel}/{name}" if rel else name
            st = os.lstat(os.path.join(upper, r))
            if name == ".wh..wh..opq":
                continue
            if name.startswith(".wh."):
                victim = f"{rel}/{name[4:]}" if rel else name[4:]
                out["/" + victim] = "D"
                continue
            if _is_whiteout(st):
                if _lower_entry(lower, r) is not None:
                    out["/" + r] = "D"
                continue
            low = _lower_entry(lower, r)
            if stat.S_ISDIR(st.st_mode):
                if low is not None and stat.S_ISDIR(low.st_mode):
                    out["/" + r] = "C"
                    if _opaque(os.path.join(upper, r)) or os.path.exists(os.path.join(upper, r, ".wh..wh..opq")):
                        mine = set(os.listdir(os.path.join(upper, r)))
                        for child in os.listdir(os.path.join(lower, r)):
                            if child not in mine:
                                out[f"/{r}/{child}"] = "D"
                else:
                    out["/" + r] = "C" if low is not None else "A"
                walk(r)
            else:
                out["/" + r] = "C" if low is not None else "A"

    walk("")
    return sorted(((k, p) for p, k in out.items()), key=lambda x: x[1])


def container_diff(root: str, cid: str) -> list[tuple[str, str]]:
    store = Store(root)
    d = store.container_dir(cid)
    try:
        meta = _read_json(os.path.join(d, "container.json"))
    except FileNotFoundError:
        if os.path.isdir(os.path.join(store.root, cid)):
            raise PyociError(f"container {cid} was not made from an image (pyoci create --image): "
                             "it has no layer of its own to compare") from None
        raise PyociError(f"container {cid} does not exist") from None
    lower = os.path.join(store.image_dir(meta["imageId"]), "rootfs")
    return diff_layers(os.path.join(d, "upper"), lower)
