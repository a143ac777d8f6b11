"""From a :class:`Selection` to a loaded backend: the one place the SDK and bench open backends.

:func:`open_choice` constructs one choice's backend (building a TensorRT engine first where
the choice says so); :func:`load_first` tries a selection's choices in order, as
``LesionAnalyzer.load`` does.
"""

from __future__ import annotations

import logging
from typing import Any

from ..backends.choice import Choice, Selection
from ..backends.registry import backend_class, backend_module, row
from ..errors import BackendError, LiverLesionError
from ..package import ModelPackage

log = logging.getLogger("liverlesion.sdk")


def backend_options(choice: Choice, threads: int | None) -> dict[str, Any]:
    """Keyword arguments of the chosen backend's constructor (``threads`` where its row takes them)."""
    options = {k: v for k, v in choice.options.items() if k not in ("build", "reuse_calibration_cache")}
    if row(choice.backend).threads and threads is not None:
        options["threads"] = threads
    return options


def open_choice(package: ModelPackage, choice: Choice, *, threads: int | None = None,
                archive: bool = False) -> tuple[ModelPackage, Any, Choice]:
    """Construct ``choice``'s backend; returns the package (reopened after an engine build), it, the choice.

    A choice that builds (``options["build"]``) builds the TensorRT (or TensorRT-RTX) engine for this GPU first
    and comes back as the choice of that engine.
    """
    if choice.options.get("build"):
        build_here = backend_module(choice.backend).build_here  # the engine backends' own builder
        package, engine = build_here(package, choice.precision, archive=archive,
                                     reuse_calibration_cache=choice.options.get("reuse_calibration_cache", True))
        kept = {k: v for k, v in choice.options.items() if k not in ("build", "reuse_calibration_cache")}
        choice = Choice(choice.backend, choice.precision, {**kept, "engine": engine}, choice.device,
                        f"engine {engine} built here (build_engine=True)")
    loaded = backend_class(choice.backend)(package, choice.precision, **backend_options(choice, threads))
    return package, loaded, choice


def load_error(choice: Choice, exc: Exception) -> LiverLesionError:
    """A backend's failure to load as a LiverLesionError (runtimes raise their own types)."""
    if isinstance(exc, LiverLesionError):
        return exc
    error = BackendError(f"the {choice.backend} backend failed to load: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def load_first(package: ModelPackage, selection: Selection, *, threads: int | None, explicit: bool,
               archive: bool = False) -> tuple[ModelPackage, Any, Selection]:
    """Load the first choice that loads; an explicit request's own error is raised as is."""
    failures: list[tuple[Choice, str]] = []
    last: Exception | None = None
    for choice in selection.candidates:
        try:
            package, loaded, choice = open_choice(package, choice, threads=threads, archive=archive)
        except Exception as exc:  # noqa: BLE001 - auto tries the next choice whatever the runtime raised
            if explicit and len(selection.candidates) == 1:
                raise load_error(choice, exc)  # noqa: B904 - it carries its cause
            log.warning("liverlesion: %s failed to load (%s); trying the next choice", choice.label(), exc)
            failures.append((choice, f"{type(exc).__name__}: {exc}"))
            last = exc
            continue
        return package, loaded, selection.loaded(choice, tuple(failures))
    tried = "; ".join(f"{c.label()}: {why}" for c, why in failures)
    if isinstance(last, LiverLesionError) and len(failures) == 1:
        raise last
    raise BackendError(f"no backend could load the package ({tried})") from last
