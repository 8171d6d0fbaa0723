# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Glob patterns (``db-*``, ``web?``, ``web[0-9]``), matched one way everywhere: silences, alert_info, outbox."""

from __future__ import annotations

import fnmatch
import typing as t

_GLOB_CHARACTERS = frozenset('*?[')


def glob_matches(value: str, patterns: t.Iterable[str]) -> bool:
    """Whether ``value`` matches one of ``patterns``: fnmatch syntax, case-sensitive on every platform."""
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def is_glob(text: str) -> bool:
    """Whether ``text`` is a pattern (has ``*``, ``?`` or ``[``) rather than a plain name."""
    return not _GLOB_CHARACTERS.isdisjoint(text)
