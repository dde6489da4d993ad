"""One JSON document carrying the shared settings and one transport's options.

``serve --settings-json DOC`` and ``listen --settings-json DOC`` take
``{"settings": {...Settings fields...}, "options": {...the transport's options...}}``, both
keys optional, every value with its JSON type: a program passes what it holds without each
value being printed and parsed back by guessing its type (as ``--set`` strings are).
Decoding is strict: an unknown key or a wrong type is a :class:`SettingsError` naming it.
"""

from __future__ import annotations

import msgspec

from transports.options import Options, options_as_dict, replace_options
from transports.settings import Settings, SettingsError

__all__ = ["decode_config", "encode_config"]


class _Document(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Plain JSON objects here; their keys and types are checked against Settings and the
    # transport's Options type, which this module cannot know in advance.
    settings: dict[str, msgspec.Raw] = {}
    options: dict[str, msgspec.Raw] = {}


_decoder = msgspec.json.Decoder(_Document)


def encode_config(settings: Settings, options: Options) -> str:
    """The document for ``--settings-json``: every setting and every option, explicitly."""
    document = {"settings": settings.as_dict(), "options": options_as_dict(options)}
    return msgspec.json.encode(document).decode()


def decode_config(text: str, settings: Settings, options: Options) -> tuple[Settings, Options]:
    """``settings`` and ``options`` with the document's values applied on top."""
    try:
        document = _decoder.decode(text)
        setting_values = {key: msgspec.json.decode(raw) for key, raw in document.settings.items()}
        option_values = {key: msgspec.json.decode(raw) for key, raw in document.options.items()}
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SettingsError(f"--settings-json: {exc}") from None
    return (
        Settings.from_mapping(setting_values, settings),
        replace_options(options, option_values),
    )
