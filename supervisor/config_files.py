"""Pipeline YAML files: one file or a directory of them, ``${VAR}`` expanded from the env."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from state.spec import PipelineSpec, SpecError, decode_spec

log = logging.getLogger(__name__)
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class ConfigFileError:
    """Why one file could not be used, with the pipeline name when it was readable."""

    file: Path
    message: str
    path: str = "$"
    pipeline: str | None = None

    def __str__(self) -> str:
        where = f" pipeline {self.pipeline}:" if self.pipeline else ""
        at = f" - at `{self.path}`" if self.path != "$" else ""
        return f"{self.file}:{where} {self.message}{at}"


@dataclass(frozen=True)
class LoadedConfig:
    specs: list[tuple[Path, PipelineSpec]]
    errors: list[ConfigFileError]


def expand_env(text: str) -> str:
    """Replace ``${VAR}`` with its value; unknown names stay as written (routing templates)."""
    return ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), m.group(0)), text)


def config_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def load_config(path: Path) -> LoadedConfig:
    """Every spec under ``path``; errors per file, and duplicate names are errors too."""
    if not path.exists():
        return LoadedConfig([], [ConfigFileError(path, "no such file or directory")])
    specs: list[tuple[Path, PipelineSpec]] = []
    errors: list[ConfigFileError] = []
    seen: dict[str, Path] = {}
    for file in config_files(path):
        result = load_file(file)
        if isinstance(result, ConfigFileError):
            errors.append(result)
        elif result.name in seen:
            message = f"duplicate pipeline name (also in {seen[result.name]})"
            errors.append(ConfigFileError(file, message, "$.metadata.name", result.name))
        else:
            seen[result.name] = file
            specs.append((file, result))
    return LoadedConfig(specs, errors)


def load_file(file: Path) -> PipelineSpec | ConfigFileError:
    try:
        document = yaml.safe_load(expand_env(file.read_text(encoding="utf-8")))
    except OSError as exc:
        return ConfigFileError(file, f"cannot read: {exc.strerror}")
    except yaml.YAMLError as exc:
        return ConfigFileError(file, f"invalid YAML: {_yaml_reason(exc)}")
    if not isinstance(document, dict):
        return ConfigFileError(file, "expected a mapping with apiVersion, kind, metadata, spec")
    try:
        return decode_spec(document)
    except SpecError as exc:
        return ConfigFileError(file, exc.message, exc.path, _name_of(document))


def _name_of(document: dict[str, object]) -> str | None:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def file_specs(path: Path) -> list[PipelineSpec]:
    """The valid specs under ``path``, logging each rejected file; ValueError if it is gone."""
    loaded = load_config(path)
    if not loaded.specs and not path.exists():
        raise ValueError(f"--config {path}: no such file or directory")
    for error in loaded.errors:
        log.error("pipeline config rejected: %s", error)
    return [spec for _, spec in loaded.specs]
