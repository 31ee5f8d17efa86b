"""Apply image layers (tar archives) onto one directory, never writing outside it.

A layer is a tar of files plus whiteouts (OCI image-spec, "Representing Changes"):
`DIR/.wh.NAME` removes NAME of the lower layers, `DIR/.wh..wh..opq` makes DIR opaque (all it
held in the lower layers is gone). Layers are applied in order onto one directory, which
becomes the image's read-only root filesystem.

Safety, in two passes:
  1. `check_members` looks at every header before anything is written and refuses the whole
     layer for an absolute name, a `..` component, a device node, a hard link whose target is
     not a path inside the image, a relative symlink that climbs above the image root, a
     whiteout that names `.`/`..`, or an entry type pyoci does not know.
  2. `LayerApplier` writes relative to a directory file descriptor, opening every parent
     component with O_NOFOLLOW: a path that goes through a symlink (from this layer or a lower
     one) is refused, never followed; an existing entry is removed before a new one is made
     with O_EXCL, so a write can never land at a link's target.
Absolute symlink targets (`/bin/sh -> /bin/busybox`) are kept: inside the container they
resolve against the container's root, and pyoci never follows them on the host.
"""
from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
import tarfile

from pyoci.errors import PyociError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_XATTR_PREFIX = "SCHILY.xattr."
_XATTRS_KEPT = ("security.capability", "user.")


class LayerError(PyociError):
    """A layer that pyoci refuses to apply (the message names the layer and the entry)."""


def clean_name(name: str, what: str = "entry") -> str:
    """A tar member name → a normalised path relative to the image root ('' for the root).
    Refuses absolute names and any `..` component."""
    if not isinstance(name, str) or "\0" in name:
        raise LayerError(f"{what} {name!r}: invalid name")
    if name.startswith("/"):
        raise LayerError(f"{what} {name!r}: absolute path (a layer may only hold relative paths)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"{what} {name!r}: '..' component (path traversal)")
    return "/".join(parts)


def symlink_escapes(rel: str, target: str) -> bool:
    """True when a relative symlink at `rel` pointing to `target` climbs above the image root."""
    if target.startswith("/"):
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined == ".." or joined.startswith("../")


def check_members(members: list[tarfile.TarInfo], layer: str = "layer") -> list[tuple]:
    """Validate every header of one layer before anything is written. Returns the actions in
    order: ("opaque", dir), ("whiteout", path), ("entry", path, member). Raises LayerError."""
    actions: list[tuple] = []
    for m in members:
        rel = clean_name(m.name, f"{layer}: entry")
        base = posixpath.basename(rel)
        if base.startswith(WHITEOUT):
            parent = posixpath.dirname(rel)
            if base == OPAQUE:
                actions.append(("opaque", parent))
            elif base.startswith(WHITEOUT + WHITEOUT):
                continue                                  # aufs metadata (.wh..wh.plnk...): ignored
            else:
                victim = base[len(WHITEOUT):]
                if victim in ("", ".", ".."):
                    raise LayerError(f"{layer}: whiteout {m.name!r} names {victim!r}: it would "
                                     "remove something outside its directory")
                actions.append(("whiteout", posixpath.join(parent, victim)))
            continue
        if m.ischr() or m.isblk():
            raise LayerError(f"{layer}: entry {m.name!r} is a device node "
                             f"({'char' if m.ischr() else 'block'} {m.devmajor}:{m.devminor}); "
                             "pyoci images may not carry devices (the runtime makes /dev)")
        if m.issym():
            if not m.linkname or "\0" in m.linkname:
                raise LayerError(f"{layer}: symlink {m.name!r} has an empty or invalid target")
            if symlink_escapes(rel, m.linkname):
                raise LayerError(f"{layer}: symlink {m.name!r} -> {m.linkname!r} points out of "
                                 "the image")
        elif m.islnk():
            target = clean_name(m.linkname, f"{layer}: hard link {m.name!r} target")
            if not target:
                raise LayerError(f"{layer}: hard link {m.name!r} points at the image root")
        elif not (m.isreg() or m.isdir() or m.isfifo()):
            raise LayerError(f"{layer}: entry {m.name!r} has an unsupported type {m.type!r}")
        if rel == "" and not m.isdir():
            raise LayerError(f"{layer}: entry {m.name!r} would replace the image root")
        actions.append(("entry", rel, m))
    return actions


class LayerApplier:
    """Writes layers into `root` (a directory that must exist), relative to a directory fd."""

    def __init__(self, root: str):
        self.root = root
        self.rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def close(self) -> None:
        if self.rootfd >= 0:
            os.close(self.rootfd)
            self.rootfd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- walking without following links -------------------------------------------------
    def _open_dir(self, rel: str, create: bool, entry: str) -> int | None:
        """An fd for directory `rel` (inside root). Never follows a symlink: a component that
        is a symlink or a non-directory is refused. Missing: made (create) or None."""
        fd = os.dup(self.rootfd)
        done = []
        try:
            for comp in [p for p in rel.split("/") if p]:
                try:
                    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(done + [comp])
                    st = os.lstat(comp, dir_fd=fd)
                    if stat.S_ISLNK(st.st_mode):
                        target = os.readlink(comp, dir_fd=fd)
                        raise LayerError(f"{entry}: goes through {where!r}, a symlink to {target!r}; "
                                         "pyoci never writes through a link") from None
                    raise LayerError(f"{entry}: goes through {where!r}, which is not a directory") from None
                os.close(fd)
                fd = nfd
                done.append(comp)
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _remove(pfd: int, name: str) -> bool:
        try:
            st = os.lstat(name, dir_fd=pfd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        return True

    # ---- one layer ---------------------------------------------------------------------------
    def apply(self, tf: tarfile.TarFile, layer: str = "layer") -> None:
        actions = check_members(tf.getmembers(), layer)
        # whiteouts hide what the LOWER layers hold: apply them all before this layer's entries
        for act in actions:
            if act[0] == "opaque":
                fd = self._open_dir(act[1], create=False, entry=f"{layer}: opaque whiteout in {act[1]!r}")
                if fd is not None:
                    try:
                        for n in os.listdir(fd):
                            self._remove(fd, n)
                    finally:
                        os.close(fd)
            elif act[0] == "whiteout":
                parent, base = posixpath.split(act[1])
                fd = self._open_dir(parent, create=False, entry=f"{layer}: whiteout for {act[1]!r}")
                if fd is not None:
                    try:
                        self._remove(fd, base)
                    finally:
                        os.close(fd)
        dirs: list[tuple[str, tarfile.TarInfo]] = []
        for act in actions:
            if act[0] != "entry":
                continue
            _, rel, m = act
            entry = f"{layer}: entry {m.name!r}"
            if rel == "":
                self._meta_root(m)
                dirs.append((rel, m))
                continue
            parent, base = posixpath.split(rel)
            pfd = self._open_dir(parent, create=True, entry=entry)
            try:
                if m.isdir():
                    self._dir(pfd, base, m, entry)
                    dirs.append((rel, m))
                elif m.isreg():
                    self._file(pfd, base, m, tf)
                elif m.issym():
                    self._remove(pfd, base)
                    os.symlink(m.linkname, base, dir_fd=pfd)
                    os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
                    os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
                elif m.islnk():
                    self._hardlink(pfd, base, m, layer)
                elif m.isfifo():
                    self._remove(pfd, base)
                    os.mkfifo(base, 0o600, dir_fd=pfd)
                    os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
                    os.chmod(base, m.mode & 0o7777, dir_fd=pfd)
            finally:
                os.close(pfd)
        # directory times last: writing into a directory changes its mtime
        for rel, m in reversed(dirs):
            fd = self._open_dir(rel, create=False, entry=f"{layer}: entry {m.name!r}")
            if fd is not None:
                try:
                    os.utime(fd, (m.mtime, m.mtime))
                finally:
                    os.close(fd)

    def _meta(self, fd: int, m: tarfile.TarInfo) -> None:
        os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)        # after chown, which clears set-id bits
        for key, value in (m.pax_headers or {}).items():
            if key.startswith(_XATTR_PREFIX):
                name = key[len(_XATTR_PREFIX):]
                if name.startswith(_XATTRS_KEPT):
                    try:
                        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
                        os.setxattr(fd, name, raw)
                    except OSError:
                        pass

    def _meta_root(self, m: tarfile.TarInfo) -> None:
        self._meta(self.rootfd, m)

    def _dir(self, pfd: int, base: str, m: tarfile.TarInfo, entry: str) -> None:
        try:
            st = os.lstat(base, dir_fd=pfd)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(base, dir_fd=pfd)
                os.mkdir(base, 0o700, dir_fd=pfd)
        except FileNotFoundError:
            os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            self._meta(fd, m)
        finally:
            os.close(fd)

    def _file(self, pfd: int, base: str, m: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        self._remove(pfd, base)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            src = tf.extractfile(m)
            if src is not None:
                with src:
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        view = memoryview(chunk)
                        while view:
                            n = os.write(fd, view)
                            view = view[n:]
            self._meta(fd, m)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _hardlink(self, pfd: int, base: str, m: tarfile.TarInfo, layer: str) -> None:
        target = clean_name(m.linkname, f"{layer}: hard link {m.name!r} target")
        tparent, tbase = posixpath.split(target)
        tfd = self._open_dir(tparent, create=False, entry=f"{layer}: hard link {m.name!r}")
        if tfd is None:
            raise LayerError(f"{layer}: hard link {m.name!r} -> {m.linkname!r}: target does not exist")
        try:
            try:
                st = os.lstat(tbase, dir_fd=tfd)
            except FileNotFoundError:
                raise LayerError(f"{layer}: hard link {m.name!r} -> {m.linkname!r}: "
                                 "target does not exist") from None
            if stat.S_ISDIR(st.st_mode):
                raise LayerError(f"{layer}: hard link {m.name!r} -> {m.linkname!r}: target is a directory")
            if target == clean_name(m.name):
                return                                    # a link to itself: nothing to do
            self._remove(pfd, base)
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)


def apply_layer_file(root: str, tar_path: str, layer: str = "layer") -> None:
    """Apply the uncompressed layer tar at `tar_path` onto directory `root`."""
    try:
        with tarfile.open(tar_path, "r:") as tf, LayerApplier(root) as ap:
            ap.apply(tf, layer)
    except tarfile.TarError as e:
        raise LayerError(f"{layer}: not a valid tar archive ({e})") from None
