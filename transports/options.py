"""A transport's own options: what only it needs, typed, with defaults, apart from the settings.

Each transport declares one frozen :class:`Options` subclass holding its defaults (its
registry record carries an instance). Constraints are declared on the fields with
``msgspec.Meta`` and enforced whenever options are decoded (:func:`replace_options`), the one
way the CLI and the experiments change them; unknown keys are refused, not ignored, so a
misspelt option is an error rather than a silent default.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from transports.settings import SettingsError, naming

__all__ = ["NoOptions", "Options", "option_names", "options_as_dict", "replace_options"]


class Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base class of every transport's options."""


class NoOptions(Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """For a transport that needs nothing beyond the shared settings."""


def option_names(options: Options) -> tuple[str, ...]:
    return options.__struct_fields__


def options_as_dict(options: Options) -> dict[str, object]:
    """The options as plain JSON-ready values, keyed by name."""
    return msgspec.structs.asdict(options)


def replace_options(
    options: Options, changes: Mapping[str, object], *, strict: bool = True
) -> Options:
    """``options`` with ``changes`` applied, decoded and checked as the options' own type.

    ``strict=False`` also reads numbers and booleans from strings (``--set KEY=VALUE``).
    Raises :class:`~transports.settings.SettingsError` naming the unknown or invalid key.
    """
    kind = type(options)
    for key in changes:
        if key not in kind.__struct_fields__:
            known = ", ".join(kind.__struct_fields__) or "none"
            raise SettingsError(f"unknown option {key!r}; this transport's options: {known}")
    try:
        return msgspec.convert(options_as_dict(options) | dict(changes), kind, strict=strict)
    except msgspec.ValidationError as exc:
        raise SettingsError(naming(exc, "option")) from None
