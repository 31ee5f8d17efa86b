"""Bundles for tests: a config.json (pyoci's default, adjusted per test) over a busybox rootfs."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Bundle:
    path: Path
    config: dict = field(default_factory=dict)

    @classmethod
    def make(cls, path, rootfs_src: str, args=None, **kw) -> "Bundle":
        from pyoci.specgen import default_config
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        shutil.copytree(rootfs_src, path / "rootfs", symlinks=True)
        cfg = default_config(args or ["/bin/true"], terminal=False)
        cfg["root"]["readonly"] = False
        b = cls(path, cfg)
        b.save()
        return b

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def process(self) -> dict:
        return self.config["process"]

    @property
    def linux(self) -> dict:
        return self.config["linux"]

    def set_args(self, *args: str) -> "Bundle":
        self.config["process"]["args"] = list(args)
        return self.save()

    def save(self) -> "Bundle":
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2))
        return self

    def write_raw(self, text: str) -> None:
        (self.path / "config.json").write_text(text)
