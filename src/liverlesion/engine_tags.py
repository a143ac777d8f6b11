"""The tags an engine is labelled with: TensorRT versions and CUDA compute capabilities, as text.

Pure parsing and formatting, no probing: a leaf, read by the manifest's engine records
(``package.engines``), the machine layer and the engine planner alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import EngineError

#: The NVIDIA runtimes an engine is built with: TensorRT (8.5 .. 11.x: Jetson, servers) and TensorRT for RTX
#: (1.x: RTX workstations and desktops), each with its own version numbering and its own plans.
TENSORRT = "tensorrt"
TENSORRT_RTX = "tensorrt-rtx"
ENGINE_RUNTIMES = (TENSORRT, TENSORRT_RTX)
RUNTIME_TITLES = {TENSORRT: "TensorRT", TENSORRT_RTX: "TensorRT-RTX"}


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version: major.minor.patch and, when known, the build number."""

    major: int
    minor: int
    patch: int = 0
    build: int | None = None

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        match = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[.+-]\S*)?\s*", str(text))
        if not match:
            raise EngineError(f"TensorRT version {text!r} is not of the form MAJOR.MINOR[.PATCH[.BUILD]] "
                              "(e.g. 8.5.2, 10.3.0.30)")
        major, minor, patch, build = match.groups()
        return cls(int(major), int(minor), int(patch or 0), None if build is None else int(build))

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def short(self) -> str:
        """major.minor.patch, as used in engine file names."""
        return f"{self.major}.{self.minor}.{self.patch}"

    def __str__(self) -> str:
        return self.short() if self.build is None else f"{self.short()}.{self.build}"


def format_compute_capability(cc: tuple[int, int]) -> str:
    """(8, 7) -> '8.7'."""
    return f"{cc[0]}.{cc[1]}"


def sm_tag(cc: tuple[int, int]) -> str:
    """(8, 7) -> 'sm87', (11, 0) -> 'sm110'."""
    return f"sm{cc[0]}{cc[1]}"


def sm_tags(ccs: tuple[tuple[int, int], ...]) -> str:
    """((8, 6), (12, 0)) -> 'sm86-sm120'."""
    return "-".join(sm_tag(cc) for cc in ccs)


def parse_compute_capability(value: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """'8.7', 'sm87', 'sm_87' or (8, 7) -> (8, 7)."""
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            return (int(value[0]), int(value[1]))
    elif isinstance(value, str):
        text = value.strip().lower()
        match = re.fullmatch(r"(\d+)\.(\d)", text) or re.fullmatch(r"sm_?(\d+)(\d)", text)
        if match:
            return (int(match.group(1)), int(match.group(2)))
    raise EngineError(f"compute capability {value!r} is not understood; give it as 8.7 or sm87")
