"""Where an image comes from: an OCI image layout (directory or tar archive, as `skopeo copy`
and `podman save --format oci-archive` make them), a docker-archive (`podman save --format
docker-archive`), or a plain root filesystem tar (optionally compressed).

Each reader only *finds* the config and the layers and says which digest each must have;
images.py copies every blob into the store, verifies it, and applies the layers. Archives are
read in place with tarfile (member lookups by name, nothing is extracted to disk here), and
every name taken from a manifest is checked (no absolute paths, no `..`) before it is used.
"""
from __future__ import annotations

import json
import os
import platform
import re
import tarfile
from dataclasses import dataclass, field
from typing import Callable, IO

from pyoci.errors import PyociError
from pyoci.images_layers import LayerError, clean_name

_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
MT_INDEX = ("application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json")
MT_MANIFEST = ("application/vnd.oci.image.manifest.v1+json",
               "application/vnd.docker.distribution.manifest.v2+json")
COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2",
                     b"\xfd7zXZ\x00": "xz"}


class ImageFormatError(PyociError):
    """The file or directory is not an image pyoci can read (the message says why)."""


def check_digest(d: object, where: str) -> str:
    if not isinstance(d, str) or not _DIGEST.match(d):
        raise ImageFormatError(f"{where}: {d!r} is not a sha256/sha512 digest")
    return d


def machine_arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


@dataclass
class Blob:
    """A blob to copy and verify: `digest` (None: nothing to check) and `size` (or None)."""
    what: str
    open: Callable[[], IO[bytes]]
    digest: str | None = None
    size: int | None = None
    media_type: str | None = None


@dataclass
class Source:
    format: str
    path: str
    default_name: str | None
    config: Blob | None                      # None for a plain rootfs tar
    layers: list[Blob] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _close: Callable[[], None] | None = None

    def close(self) -> None:
        if self._close:
            self._close()
            self._close = None


# ---------------------------------------------------------------------------------------------
def open_source(path: str) -> Source:
    path = os.path.abspath(path)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "oci-layout")):
            raise ImageFormatError(f"{path}: a directory must be an OCI image layout "
                                   "(no oci-layout file); for a root filesystem, import a tar of it")
        return _oci(path, _DirReader(path), "oci-layout")
    if not os.path.isfile(path):
        raise ImageFormatError(f"{path}: no such file or directory")
    with open(path, "rb") as f:
        head = f.read(6)
    if any(head.startswith(m) for m in COMPRESSION_MAGIC):
        return _rootfs_tar(path)
    try:
        tf = tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as e:
        raise ImageFormatError(f"{path}: not a tar archive nor an OCI layout directory ({e})") from None
    reader = _TarReader(tf, path)
    if reader.has("oci-layout"):
        return _oci(path, reader, "oci-archive")
    if reader.has("manifest.json"):
        try:
            man = json.loads(reader.read("manifest.json"))
        except ValueError:
            man = None
        if isinstance(man, list) and man and isinstance(man[0], dict) and "Config" in man[0]:
            return _docker(path, reader, man)
    tf.close()
    return _rootfs_tar(path)


class _DirReader:
    def __init__(self, root: str):
        self.root = root

    def has(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.root, clean_name(name, "layout path")))

    def open(self, name: str) -> IO[bytes]:
        p = os.path.join(self.root, clean_name(name, "layout path"))
        try:
            return open(p, "rb")
        except OSError as e:
            raise ImageFormatError(f"{p}: {e.strerror}") from None

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def close(self) -> None:
        pass


class _TarReader:
    def __init__(self, tf: tarfile.TarFile, path: str):
        self.tf, self.path = tf, path
        self.members = {}
        for m in tf.getmembers():
            try:
                self.members[clean_name(m.name)] = m
            except LayerError:
                continue        # never looked up: a name pyoci would refuse is simply ignored

    def has(self, name: str) -> bool:
        return clean_name(name, "archive path") in self.members

    def open(self, name: str) -> IO[bytes]:
        m = self.members.get(clean_name(name, "archive path"))
        f = self.tf.extractfile(m) if m is not None and (m.isreg() or m.islnk() or m.issym()) else None
        if f is None:
            raise ImageFormatError(f"{self.path}: {name} is missing from the archive")
        return f

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def close(self) -> None:
        self.tf.close()


def _json(data: bytes, where: str) -> dict | list:
    try:
        return json.loads(data)
    except ValueError as e:
        raise ImageFormatError(f"{where}: invalid JSON ({e})") from None


# ---- OCI image layout --------------------------------------------------------------------------
def _blob_name(digest: str) -> str:
    alg, hexd = digest.split(":", 1)
    return f"blobs/{alg}/{hexd}"


def _read_verified(reader, desc: dict, where: str) -> bytes:
    import hashlib
    d = check_digest(desc.get("digest"), f"{where}.digest")
    data = reader.read(_blob_name(d))
    alg, hexd = d.split(":", 1)
    if hashlib.new(alg, data).hexdigest() != hexd:
        raise ImageFormatError(f"{where}: blob {d} does not match its digest")
    if isinstance(desc.get("size"), int) and desc["size"] != len(data):
        raise ImageFormatError(f"{where}: blob {d} is {len(data)} bytes, the descriptor says {desc['size']}")
    return data


def _pick(manifests: list, where: str, notes: list[str]) -> dict:
    if not isinstance(manifests, list) or not manifests:
        raise ImageFormatError(f"{where}.manifests: the layout holds no image")
    arch = machine_arch()
    fit = [m for m in manifests if isinstance(m, dict) and
           (not m.get("platform") or (m["platform"].get("os") in (None, "linux") and
                                      m["platform"].get("architecture") in (None, arch)))]
    if not fit:
        raise ImageFormatError(f"{where}.manifests: no image for linux/{arch}")
    if len(fit) > 1:
        notes.append(f"{where}: {len(fit)} images fit linux/{arch}; the first was taken")
    return fit[0]


def _oci(path: str, reader, fmt: str) -> Source:
    try:
        layout = _json(reader.read("oci-layout"), "oci-layout")
        if not isinstance(layout, dict) or not str(layout.get("imageLayoutVersion", "")).startswith("1."):
            raise ImageFormatError(f"{path}: oci-layout: unsupported imageLayoutVersion")
        index = _json(reader.read("index.json"), "index.json")
        notes: list[str] = []
        where = "index.json"
        desc = _pick(index.get("manifests") if isinstance(index, dict) else None, where, notes)
        name = (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        for depth in range(4):
            data = _read_verified(reader, desc, f"{where} manifest")
            doc = _json(data, f"manifest {desc.get('digest')}")
            mt = desc.get("mediaType") or doc.get("mediaType")
            if mt in MT_INDEX or (not mt and "manifests" in doc):
                where = f"index {desc['digest']}"
                desc = _pick(doc.get("manifests"), where, notes)
                continue
            break
        else:
            raise ImageFormatError(f"{path}: image indexes nested too deep")
        cfg_desc = doc.get("config")
        if not isinstance(cfg_desc, dict):
            raise ImageFormatError(f"manifest {desc['digest']}: no config descriptor")
        cfg_d = check_digest(cfg_desc.get("digest"), "manifest.config.digest")
        layers = []
        for i, ld in enumerate(doc.get("layers") or []):
            if not isinstance(ld, dict):
                raise ImageFormatError(f"manifest.layers[{i}]: not a descriptor")
            if ld.get("urls"):
                raise ImageFormatError(f"manifest.layers[{i}]: a foreign layer (urls) is not supported")
            d = check_digest(ld.get("digest"), f"manifest.layers[{i}].digest")
            layers.append(Blob(f"layer {i + 1} ({d[:19]})", (lambda n=_blob_name(d): reader.open(n)),
                               d, ld.get("size"), ld.get("mediaType")))
        cfg = Blob("config", (lambda n=_blob_name(cfg_d): reader.open(n)), cfg_d, cfg_desc.get("size"),
                   cfg_desc.get("mediaType"))
        return Source(fmt, path, name, cfg, layers, notes, reader.close)
    except BaseException:
        reader.close()
        raise


# ---- docker-archive -------------------------------------------------------------------------
def _docker(path: str, reader: _TarReader, man: list) -> Source:
    try:
        notes = []
        if len(man) > 1:
            notes.append(f"manifest.json holds {len(man)} images; the first was taken")
        entry = man[0]
        cfg_name = clean_name(str(entry.get("Config")), "manifest.json Config")
        stem = os.path.basename(cfg_name).removesuffix(".json")
        cfg_digest = f"sha256:{stem}" if re.fullmatch(r"[0-9a-f]{64}", stem) else None
        if cfg_digest is None:
            notes.append(f"config {cfg_name}: its name is not its digest, only the layers are verified")
        layers = []
        for i, ln in enumerate(entry.get("Layers") or []):
            ln = clean_name(str(ln), f"manifest.json Layers[{i}]")
            if not reader.has(ln):
                raise ImageFormatError(f"{path}: layer {ln} is missing from the archive")
            # verified against the config's rootfs.diff_ids (the digest of the uncompressed tar)
            layers.append(Blob(f"layer {i + 1} ({ln})", (lambda n=ln: reader.open(n))))
        tags = entry.get("RepoTags") or []
        cfg = Blob("config", (lambda n=cfg_name: reader.open(n)), cfg_digest)
        return Source("docker-archive", path, tags[0] if tags else None, cfg, layers, notes, reader.close)
    except BaseException:
        reader.close()
        raise


# ---- a plain root filesystem tar -----------------------------------------------------------------
def _rootfs_tar(path: str) -> Source:
    base = os.path.basename(path)
    for ext in (".gz", ".tgz", ".zst", ".xz", ".bz2", ".tar"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return Source("rootfs-tar", path, base or None, None,
                  [Blob("layer 1 (rootfs tar)", lambda: open(path, "rb"))],
                  ["a plain rootfs tar carries no digest: pyoci records the one it computed"])
