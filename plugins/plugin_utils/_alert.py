# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The alert model: the seed's eleven fields, their validation and normalisation, and fingerprints."""

from __future__ import annotations

import hashlib
import json
import re
import typing as t
from urllib.parse import urlsplit

FIELDS: tuple[str, ...] = (
    'alert_name',
    'status',
    'alert_priority',
    'alert_id',
    'description',
    'alert_url',
    'metric_name',
    'resource_id',
    'resource_name',
    'resource_type',
    'run_book_url',
)
REQUIRED_FIELDS = ('alert_name', 'status')
URL_FIELDS = ('alert_url', 'run_book_url')

STATUS_ALARM = 'Alarm'
STATUS_OK = 'OK'
STATUSES = (STATUS_ALARM, STATUS_OK)
PRIORITIES = ('Critical', 'Medium')

# Long enough for anything a person would type, short enough that a runaway template cannot produce
# a multi-megabyte webhook body that Temperstack rejects only after the upload.
MAX_FIELD_CHARS = 65536
ALERT_ID_MAX_CHARS = 128

_SLUG_UNSAFE = re.compile(r'[^a-z0-9]+')


class AlertValidationError(ValueError):
    """Bad input, described in words that name the option at fault."""


class Alert:
    """A validated alert: exactly the payload that Temperstack will receive."""

    __slots__ = ('payload',)

    def __init__(self, payload: dict[str, str]) -> None:
        self.payload = payload

    @property
    def alert_id(self) -> str:
        return self.payload['alert_id']

    @property
    def status(self) -> str:
        return self.payload['status']

    @property
    def fingerprint(self) -> str:
        return payload_fingerprint(self.payload)

    def __repr__(self) -> str:
        return f'Alert({self.payload!r})'


def payload_fingerprint(payload: t.Mapping[str, str]) -> str:
    """A digest of the payload that does not depend on key order."""
    canonical = json.dumps(payload, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
    return hashlib.sha256(canonical.encode('utf-8', 'surrogatepass')).hexdigest()


def build_alert(options: t.Mapping[str, t.Any]) -> Alert:
    """Validate and normalise the seed's fields from ``options``; other keys are ignored.

    ``alert_id`` is derived from ``alert_name`` and ``resource_id`` when it is not given,
    so that repeated runs address the same alert.
    """
    payload: dict[str, str] = {}
    for field in FIELDS:
        value = _as_text(field, options.get(field))
        if value is not None:
            payload[field] = value

    for field in REQUIRED_FIELDS:
        if field not in payload:
            raise AlertValidationError(f'{field} is required and must not be empty')

    payload['status'] = _one_of('status', payload['status'], STATUSES)
    if 'alert_priority' in payload:
        payload['alert_priority'] = _one_of('alert_priority', payload['alert_priority'], PRIORITIES)
    for field in URL_FIELDS:
        if field in payload:
            _check_http_url(field, payload[field])

    if 'alert_id' not in payload:
        payload['alert_id'] = derive_alert_id(payload['alert_name'], payload.get('resource_id'))
    elif '\0' in payload['alert_id']:
        # The ledger keys on it, and PostgreSQL cannot store a NUL in text: an id that only SQLite could keep.
        raise AlertValidationError(f"alert_id must not contain a NUL character (\\0), got {payload['alert_id']!r}")
    return Alert({field: payload[field] for field in FIELDS if field in payload})


def derive_alert_id(*parts: str | None, prefix: str = 'ansible', salt: str = 'alert') -> str:
    """A readable, stable, length-bounded identifier built from ``parts`` (``None`` parts are skipped).

    The readable part is a slug of the inputs; the hash suffix keeps distinct inputs distinct even
    when their slugs collide or are cut short. ``salt`` keeps the module's and the callback's ids apart.
    """
    given = [part for part in parts if part is not None]
    # JSON keeps the parts apart; joined with a separator, ('a<sep>b',) and ('a', 'b') would share an id.
    encoded = json.dumps([salt] + given, ensure_ascii=False)
    digest = hashlib.sha256(encoded.encode('utf-8', 'surrogatepass')).hexdigest()[:12]
    slug = '-'.join(filter(None, (_slug(part) for part in [prefix] + given)))
    room = ALERT_ID_MAX_CHARS - len(digest) - 1
    readable = slug[:room].rstrip('-')
    # Names with no letter or digit in them (all punctuation or non-Latin script) leave only the hash.
    return f'{readable}-{digest}' if readable else digest


def _slug(text: str) -> str:
    return _SLUG_UNSAFE.sub('-', text.lower()).strip('-')


def _as_text(field: str, value: t.Any) -> str | None:
    """Temperstack takes strings only; numbers are accepted and sent as their text."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise AlertValidationError(
            f'{field} must be a string, got {_type_name(value)}'
        )
    text = valid_unicode(str(value)).strip()
    if not text:
        return None
    if len(text) > MAX_FIELD_CHARS:
        raise AlertValidationError(
            f'{field} is {len(text)} characters long; at most {MAX_FIELD_CHARS} are allowed'
        )
    return text


def valid_unicode(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so that it can be encoded as UTF-8.

    Ansible decodes undecodable bytes (a command's output, a file name) to lone surrogates; sent as they are,
    they make a body that is not UTF-8, which Temperstack refuses, and a ledger entry SQLite cannot store.
    A surrogate pair (two code points) becomes the one character it stands for.
    """
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')
    return text


def _type_name(value: t.Any) -> str:
    if isinstance(value, bool):
        return 'a boolean'
    if isinstance(value, t.Mapping):
        return 'a dictionary'
    if isinstance(value, (list, tuple, set)):
        return 'a list'
    return f'a value of type {type(value).__name__}'


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    for choice in allowed:
        if value.lower() == choice.lower():
            return choice
    raise AlertValidationError(
        f"{field} must be one of {', '.join(allowed)} (any letter case), got {value!r}"
    )


def _check_http_url(field: str, value: str) -> None:
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ('http', 'https') or not parts.netloc:
        raise AlertValidationError(f'{field} must be an http:// or https:// URL, got {value!r}')
