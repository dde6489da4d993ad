"""The README's transports table stays in step with the registry."""

from __future__ import annotations

import re
from pathlib import Path

from transports.registry import TRANSPORTS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_table_lists_every_transport_with_its_endpoint() -> None:
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([\w-]+)` \| `([^`]+)`", README.read_text(), re.M)
    }
    assert set(rows) == set(TRANSPORTS)
    for name, transport in TRANSPORTS.items():
        assert rows[name].startswith(transport.url("127.0.0.1", transport.default_port))
