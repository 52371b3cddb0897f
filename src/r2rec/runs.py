"""A run folder (``runs/<name>/``) and its per-stage manifests.

Each stage writes ``manifests/<stage>.json`` (atomically, :mod:`r2rec.io`) holding the sha256 of its inputs, its
config, its seed and the library versions. A stage whose manifest matches what it is about to do is skipped; a
stage without a matching manifest runs (and stages that checkpoint, like SFT/RL, resume from their own
checkpoints). A manifest that cannot be read (torn, not JSON) counts as absent, with a warning: the stage runs
again. Credentials in a config (a token in a URL) are redacted (:func:`r2rec.errors.redact`) before a manifest is
written or compared.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable

from r2rec.errors import redact_obj
from r2rec.io import atomic_write_json, remove_stale_tmp, sha256_file

log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("r2rec", "numpy", "scipy", "torch", "transformers", "peft", "trl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _plain(config: Any) -> Any:
    return asdict(config) if is_dataclass(config) and not isinstance(config, type) else config


class RunDir:
    """Paths of one run. Sub-folders are created on demand."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def sub(self, name: str) -> Path:
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def results(self) -> Path:
        return self.sub("results")

    @property
    def manifests(self) -> Path:
        return self.sub("manifests")

    # -- manifests -------------------------------------------------------------------------------------
    def manifest_path(self, stage: str) -> Path:
        return self.manifests / f"{stage}.json"

    @staticmethod
    def fingerprint(inputs: Iterable[Path], config: Any, seed: int | None) -> dict:
        files = {str(p): sha256_file(Path(p)) for p in sorted(map(str, inputs))}
        return {"inputs": files, "config": redact_obj(_plain(config)), "seed": seed}

    def read_manifest(self, stage: str) -> dict | None:
        """The stage's manifest, or None when there is none or it cannot be read (then with a warning)."""
        path = self.manifest_path(stage)
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning(
                f"[run] {path}: unreadable manifest ({type(e).__name__}), treated as absent: the stage runs again"
            )
            return None
        if not isinstance(manifest, dict):
            log.warning(f"[run] {path}: not a manifest (no JSON object), treated as absent: the stage runs again")
            return None
        return manifest

    def manifest_matches(self, stage: str, inputs: Iterable[Path], config: Any, seed: int | None = None) -> bool:
        old = self.read_manifest(stage)
        if old is None:
            return False
        new = self.fingerprint(inputs, config, seed)
        # Round-trip the new config through JSON so tuples/lists compare equal.
        new = json.loads(json.dumps(new, default=str))
        return all(old.get(k) == new[k] for k in ("inputs", "config", "seed"))

    def write_manifest(
        self,
        stage: str,
        inputs: Iterable[Path],
        config: Any,
        seed: int | None = None,
        outputs: Iterable[Path] = (),
        extra: dict | None = None,
    ) -> Path:
        m = self.fingerprint(inputs, config, seed)
        m.update(
            stage=stage,
            outputs=[str(p) for p in outputs],
            versions=_versions(),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        )
        path = atomic_write_json(self.manifest_path(stage), redact_obj(json.loads(json.dumps(m, default=str))))
        stale = remove_stale_tmp(self.root)  # what a killed earlier attempt of any stage left behind
        if stale:
            log.info("[%s] removed %d temporary file(s) left by a killed process", stage, len(stale))
        return path
