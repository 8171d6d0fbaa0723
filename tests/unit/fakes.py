# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Test doubles shared by the unit tests and the fault suite (tests/faults)."""

from __future__ import annotations

import io
import typing as t


class FakeResponse:
    """Enough of http.client.HTTPResponse for the client: a status, a body and a context manager."""

    def __init__(self, status: int = 200, body: bytes = b'{"result":"ok"}') -> None:
        self.status = status
        self._body = io.BytesIO(body)
        self.closed = False

    def getcode(self) -> int:
        return self.status

    def read(self, size: int = -1) -> bytes:
        return self._body.read(size)

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        self.closed = True


class FakeDisplay:
    """A callback's ``_display``: keeps what is displayed and warned, ignores the rest."""

    verbosity = 0

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def display(self, msg, *args, **kwargs):
        self.lines.append(msg)

    def warning(self, msg, *args, **kwargs):
        self.warnings.append(msg)

    def __getattr__(self, name):  # v, vv, vvvv, debug, ...
        return lambda *args, **kwargs: None
