# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Which ledger a task or run uses (``ledger_url``, ``ledger_path``), and how to show it without its password."""

from __future__ import annotations

import os
import re
import typing as t
from urllib.parse import unquote

from ._endpoint import MASK
from ._ledger import LedgerError

DEFAULT_LEDGER_PATH = os.path.join('~', '.ansible', 'temperstack', 'ledger.sqlite3')
LEDGER_PATH_ENV = 'TEMPERSTACK_LEDGER_PATH'

# Masked on the raw text, before anything tries to parse it: a URL too malformed to parse (an unclosed IPv6
# bracket, a bad %-escape) must not show its password in the message that says so. In free text: the user part of
# any scheme's URL, and every password=... (query or key/value connection string).
_USERINFO_PASSWORD = re.compile(r'(?P<head>[A-Za-z][A-Za-z0-9+.-]{0,31}://[^:/?#@\s]*):[^/?#\s@]*(?:@[^/?#\s@]*)*@')
_PASSWORD_PARAMETER = re.compile(r'(?i)(?P<head>\bpassword\s*=\s*)(?:\'(?:[^\'\\]|\\.)*\'|[^&#\s]*)')
# In one URL as given (ledger_url), libpq reads the user part up to its last '@': a password may hold '#', '?', '/'
# or a space that were never %-encoded.
_URL_USERINFO = re.compile(r'^(?P<head>\s*[A-Za-z][A-Za-z0-9+.-]{0,31}://[^:/?#@\s]*):(?P<password>.*)@(?P<tail>[^@]*)$', re.S)
_URL_PASSWORD_PARAMETER = re.compile(r'(?i)(?P<head>[?&]password=)(?P<password>[^&]*)')


def default_ledger_path(environ: t.Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(LEDGER_PATH_ENV) or DEFAULT_LEDGER_PATH


def is_url(spec: str | None) -> bool:
    """Whether a ledger spec names a PostgreSQL server (a libpq URI) rather than a file."""
    return bool(spec) and spec.split('://', 1)[0].lower() in ('postgresql', 'postgres') and '://' in spec


def mask_url(text: str) -> str:
    """``text`` fit for any message: every URL password (user part or ``password=`` parameter) masked, whatever
    the scheme and however malformed the rest. ``text`` may be one URL as given, or a message quoting URLs."""
    whole = _URL_USERINFO.match(text)
    if whole is not None and '://' in text:
        text = f'{whole.group("head")}:{MASK}@{whole.group("tail")}'
    if '://' in text and not any(char.isspace() for char in text.strip()):
        text = _URL_PASSWORD_PARAMETER.sub(lambda match: match.group('head') + MASK, text)
    text = _USERINFO_PASSWORD.sub(lambda match: f'{match.group("head")}:{MASK}@', text)
    return _PASSWORD_PARAMETER.sub(lambda match: match.group('head') + MASK, text)


def passwords_in(url: str) -> set[str]:
    """The passwords a connection URI or string holds, as written and %-decoded, to mask what a driver quotes back."""
    found = set()
    whole = _URL_USERINFO.match(url)
    if whole is not None:
        found.add(whole.group('password'))
    found.update(match.group('password') for match in _URL_PASSWORD_PARAMETER.finditer(url))
    for match in re.finditer(r'(?i)\bpassword\s*=\s*(?:\'(?P<quoted>(?:[^\'\\]|\\.)*)\'|(?P<plain>[^&#\s]*))', url):
        found.add(match.group('quoted') or match.group('plain') or '')
    variants = {variant for secret in found for variant in (secret, unquote(secret)) if variant}
    # A password cut where libpq cuts it (at '#', '?', '/' or a space) still shows its first part in a message.
    variants |= {part for secret in list(variants) for part in re.split(r'[#?/\s]', secret) if len(part) >= 4}
    return variants


def mask_passwords(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with the URL's passwords masked wherever they appear.

    A long password is masked wherever it appears; a short one only where it stands alone, so that a password
    'p' does not turn "expired" into "ex********ired".
    """
    for secret in sorted(passwords_in(url), key=len, reverse=True):
        pattern = re.escape(secret) if len(secret) >= 8 else rf'(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])'
        text = re.sub(pattern, MASK, text)
    return mask_url(text)


def check_ledger_url(url: str | None) -> str | None:
    """``ledger_url`` as given, if it is a PostgreSQL connection URI; a LedgerError naming the option if not."""
    if url is None:
        return None
    if not is_url(url):
        shown = mask_url(url) if '://' in url else 'the value given'
        raise LedgerError(
            f'ledger_url must be a PostgreSQL connection URI, postgresql://user@host[:port]/dbname[?sslmode=...] '
            f'(an empty value is not "unset"); got {shown}. Leave it unset to use the local ledger file (ledger_path)'
        )
    return url


def ledger_spec(url: str | None, path: str | None) -> str:
    """The ledger a task or run uses: ``ledger_url`` wins over ``ledger_path``, which defaults to the local file."""
    if url:
        return url
    return os.path.abspath(os.path.expanduser(path or default_ledger_path()))


def fallback_path(path: str | None) -> str:
    """The local file that keeps what could not be written to a shared ledger, next to ``ledger_path``'s file.

    A file of its own, so that entering or leaving fleet mode never mixes it with a controller's own ledger:
    everything in it is moved into the shared ledger by the next run on this machine that reaches the server.
    """
    root, ext = os.path.splitext(os.path.abspath(os.path.expanduser(path or default_ledger_path())))
    return f'{root}.fallback{ext or ".sqlite3"}'
