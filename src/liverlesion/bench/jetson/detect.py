"""Whether this runs on a Jetson, and which: model, L4T release and JetPack version.

:func:`detect_jetson` looks at ``/etc/nv_tegra_release``, ``/proc/device-tree`` and ``nvpmodel`` on PATH;
the root and PATH are parameters, so tests use fake ones.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...errors import DataFormatError

#: L4T major release -> JetPack major version.
JETPACK = {32: "4", 34: "5 (developer preview)", 35: "5", 36: "6", 38: "7", 39: "7"}


@dataclass(frozen=True)
class JetsonHost:
    """A Jetson: its model, L4T release and JetPack version (None where not found), and what gave it away."""

    model: str | None
    l4t: str | None
    jetpack: str | None
    evidence: tuple[str, ...]
    path: str | None = None  # the PATH its tools are looked up in (None: the process's)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return None


def parse_l4t(text: str) -> tuple[str, str | None]:
    """``("36.4.4", "6")`` from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.4, GCID: ...")."""
    match = re.search(r"R(\d+)\s*\(\w+\),\s*REVISION:\s*([\d.]+)", text)
    if match is None:
        raise DataFormatError(f"not an L4T release line: {text.strip()[:80]!r}; expected e.g. "
                              f"'# R36 (release), REVISION: 4.4, ...'")
    major = int(match.group(1))
    return f"{major}.{match.group(2).rstrip('.')}", JETPACK.get(major)


def detect_jetson(root: str | Path = "/", path: str | None = None) -> JetsonHost | None:
    """The Jetson this runs on, or None: ``root``/etc/nv_tegra_release, its device tree, or nvpmodel on ``path``."""
    root = Path(root)
    evidence: list[str] = []
    release = _read(root / "etc/nv_tegra_release")
    l4t = jetpack = None
    if release is not None:
        evidence.append("/etc/nv_tegra_release")
        try:
            l4t, jetpack = parse_l4t(release)
        except DataFormatError:
            pass  # still a Jetson; the release stays unknown
    model = (_read(root / "proc/device-tree/model") or "").strip("\x00 \n") or None
    if model is not None and "jetson" in model.lower():
        evidence.append("/proc/device-tree/model")
    compatible = _read(root / "proc/device-tree/compatible") or ""
    if "nvidia,tegra" in compatible:  # carrier boards from other vendors may not say "Jetson" in the model
        evidence.append("/proc/device-tree/compatible")
    nvpmodel = shutil.which("nvpmodel", path=path)
    if nvpmodel is not None:
        evidence.append(f"nvpmodel at {nvpmodel}")
    if not evidence:
        return None
    return JetsonHost(model, l4t, jetpack, tuple(evidence), path)
