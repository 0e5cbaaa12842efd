"""Read TOML, apply ``--set a.b=c`` overrides, validate into an :class:`ExperimentConfig`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from decent._names import safe_name
from decent.config._errors import MISSING, ConfigError, Issue, issues_from_validation
from decent.config._models import ExperimentConfig, sync
from decent.config._overrides import TOO_DEEP, apply_overrides, check_depth, tomllib
from decent.config._sweep import expand


def parse_toml(text: str, source: str = "<string>") -> dict[str, Any]:
    """Parse TOML text; a syntax error becomes a :class:`ConfigError`.

    A leading UTF-8 byte-order mark (as some Windows editors write) is ignored. Tables and
    arrays may nest at most :data:`~decent.config._overrides.MAX_DEPTH` levels.
    """
    text = text.removeprefix("\ufeff")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            [Issue("(TOML syntax)", MISSING, f"not valid TOML: {err}")], source
        ) from None
    except RecursionError:
        raise ConfigError([Issue("(TOML syntax)", MISSING, TOO_DEEP)], source) from None
    try:
        check_depth(raw, "(TOML syntax)")
    except ConfigError as err:
        raise ConfigError(err.issues, source) from None
    return raw


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file; a missing file or bad syntax becomes a :class:`ConfigError`."""
    file = Path(path)
    if not file.is_file():
        rule = "no such file" if not file.exists() else "not a file"
        raise ConfigError([Issue("(config file)", str(file), f"{rule}; check the path")])
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Issue("(config file)", str(file), f"cannot be read: {err}")]) from None
    return parse_toml(text, str(file))


def validate(raw: Mapping[str, Any], source: str | None = None) -> ExperimentConfig:
    """Validate a plain dict into an :class:`ExperimentConfig` (and every sweep point).

    Raises:
        ConfigError: with one line per problem.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError([Issue("(config)", raw, "must be a table of sections")], source)
    sync()
    try:
        config = ExperimentConfig.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(
            issues_from_validation(err, ExperimentConfig, dict(raw)), source
        ) from None
    if config.cross_issues():
        raise ConfigError(config.cross_issues(), source)
    if config.sweep is not None:
        try:
            expand(config)
        except ConfigError as err:
            raise ConfigError(err.issues, source) from None
    return config


def loads_config(
    text: str,
    overrides: Sequence[str] = (),
    *,
    study: str = "experiment",
    source: str = "<string>",
) -> ExperimentConfig:
    """Parse TOML ``text``, apply ``overrides`` and validate.

    Args:
        text: the TOML document.
        overrides: ``--set`` items, ``"a.b=value"``.
        study: the study name used when the document sets none.
        source: name used in error messages.

    Raises:
        ConfigError: for any problem (syntax, unknown keys, wrong types, bad values).
    """
    raw = parse_toml(text, source)
    return _finish(raw, overrides, study, source)


def load_config(
    path: str | os.PathLike[str], overrides: Sequence[str] = (), *, study: str | None = None
) -> ExperimentConfig:
    """Read the TOML file ``path``, apply ``overrides`` and validate.

    The study defaults to the file's stem (``configs/dsgd_ring.toml`` -> ``dsgd_ring``).

    Args:
        path: the config file.
        overrides: ``--set`` items, ``"a.b=value"``, applied in order.
        study: force the study name (wins over the file and the overrides).

    Returns:
        The validated, frozen :class:`ExperimentConfig`.

    Raises:
        ConfigError: for any problem, with one line ``field.path: value -> rule`` each.

    Example:
        >>> cfg = load_config("configs/dsgd.toml", ["algorithm.lr=0.05"])  # doctest: +SKIP
    """
    raw = read_toml(path)
    overrides = list(overrides)
    if study is not None:
        overrides.append(f"study={json.dumps(study)}")
    return _finish(raw, overrides, safe_name(Path(path).stem), str(path))


def _finish(
    raw: dict[str, Any], overrides: Sequence[str], study: str, source: str
) -> ExperimentConfig:
    try:
        merged = apply_overrides(raw, overrides)
    except ConfigError as err:
        raise ConfigError(err.issues, source) from None
    merged.setdefault("study", study)
    return validate(merged, source)
