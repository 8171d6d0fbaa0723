# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The Temperstack webhook client: one POST per alert, retried when retrying can help."""

from __future__ import annotations

import email.utils
import functools
import json
import os
import random
import socket
import ssl
import time
import types
import typing as t
from http.client import HTTPException
from urllib.error import HTTPError, URLError

from ansible.module_utils.ansible_release import __version__ as ansible_version

from ._alert import AlertValidationError
from ._endpoint import Endpoint

COLLECTION_VERSION = '1.0.0'
USER_AGENT = f'temperstack.alerting/{COLLECTION_VERSION} (ansible-core {ansible_version})'

DEFAULT_TIMEOUT = 10
DEFAULT_RETRIES = 3
# Beyond these, a socket cannot take the timeout (OverflowError) or a run would wait for hours on one alert.
MAX_TIMEOUT = 3600
MAX_RETRIES = 10
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
# Retry-After is honoured, but a server asking for minutes must not hold a playbook for minutes.
RETRY_AFTER_CAP = 30.0
MAX_RESPONSE_CHARS = 500

_KEY_REJECTED = (401, 403, 404)


def check_timeout(value: t.Any) -> float:
    """``timeout`` as the client can use it, or an ``AlertValidationError`` that names the option."""
    # value != value is NaN; math.isnan() would raise OverflowError for an integer too large for a float.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value <= 0:  # pylint: disable=comparison-with-itself
        raise AlertValidationError(f'timeout must be a positive number of seconds, got {value}')
    if value > MAX_TIMEOUT:
        raise AlertValidationError(f'timeout must be at most {MAX_TIMEOUT} seconds, got {value}')
    return value


def check_retries(value: t.Any) -> int:
    """``retries`` as the client can use it, or an ``AlertValidationError`` that names the option."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise AlertValidationError(f'retries must be between 0 and {MAX_RETRIES}, got {value}')
    return value


def check_ca_path(path: str | None) -> str | None:
    """``ca_path`` if it names a file, else an ``AlertValidationError`` that names the option.

    Left to the TLS layer, a missing bundle reads as a connection error ("No such file or directory"), and a
    file without a certificate as a TLS error ("PEM lib"): both retried like a failed connection, and neither
    message says which setting is wrong.
    """
    if path is None:
        return path
    if not os.path.isfile(path):
        raise AlertValidationError(f'ca_path {path} is not a file: {_GIVE_A_CA_BUNDLE}')
    try:
        _load_ca_bundle(path, os.stat(path).st_mtime_ns)
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise AlertValidationError(f'ca_path {path} holds no usable CA certificate ({exc}): {_GIVE_A_CA_BUNDLE}') from None
    return path


_GIVE_A_CA_BUNDLE = "give the PEM bundle of the CA certificates that signed Temperstack's certificate"


@functools.lru_cache(maxsize=16)
def _load_ca_bundle(path: str, _mtime_ns: int) -> None:
    # Once per file and version of it: a loop of alert tasks does not parse the same bundle for every item.
    ssl.create_default_context(cafile=path)


class SendError(Exception):
    """Temperstack did not acknowledge the alert. The message never holds the key."""

    def __init__(self, message: str, http_status: int | None, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.attempts = attempts


class Acknowledgement(t.NamedTuple):
    http_status: int
    attempts: int
    response: str


class _Retryable(Exception):
    def __init__(self, reason: str, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status
        self.retry_after = retry_after


def _urls() -> types.ModuleType:
    # Imported when the first request is made, not with this module: the callback imports the client into
    # ansible-playbook itself, which never sends (its delivery process does), and there
    # ansible.module_utils.urls would cost every run about 20 ms and 2 MB for nothing. The alert action
    # plugin imports it with itself, for its workers to inherit.
    from ansible.module_utils import urls

    return urls


def open_webhook(url: str, *, method: str, **kwargs: t.Any) -> t.Any:
    """``open_url`` with a TLS context built once per process instead of once per request.

    ``open_url`` builds a new context, loading the system CA store, on every call, even for plain http:
    about 40 ms per request. Everything else is ``open_url``'s own behaviour (proxies, CA paths, redirects).
    """
    context = _tls_context(url.lower().startswith('https:'), kwargs['validate_certs'], kwargs.get('ca_path'))
    return _urls().Request().open(method, url, context=context, **kwargs)


@functools.lru_cache(maxsize=None)
def _tls_context(https: bool, validate_certs: bool, ca_path: str | None) -> ssl.SSLContext:
    if not https:
        # Never used for http://, but Request would otherwise build a full one.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _urls().make_context(cafile=ca_path, validate_certs=validate_certs)


class TemperstackClient:
    """Delivers payloads to one endpoint.

    ``opener`` (``open_webhook``, ``open_url`` with a reused TLS context, by default) and ``sleep`` are injectable so that tests can drive every path
    without a network or a clock.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        validate_certs: bool = True,
        ca_path: str | None = None,
        opener: t.Callable[..., t.Any] = open_webhook,
        sleep: t.Callable[[float], None] = time.sleep,
        jitter: t.Callable[[], float] = random.random,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self._opener = opener
        self._sleep = sleep
        self._jitter = jitter

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def send(self, payload: t.Mapping[str, str]) -> Acknowledgement:
        body = json.dumps(payload, ensure_ascii=False).encode('utf-8', 'surrogatepass')
        last = _Retryable('no attempt was made')
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self._sleep(self._backoff(attempt - 1, last.retry_after))
            try:
                status, text = self._post(body)
            except _Retryable as exc:
                last = exc
                continue
            except SendError as exc:
                exc.attempts = attempt
                raise
            return Acknowledgement(status, attempt, text)
        raise SendError(
            f'could not deliver to {self.endpoint.masked_url} after {self.max_attempts} '
            f'attempt{"s" if self.max_attempts > 1 else ""}: {last.reason}',
            http_status=last.http_status,
            attempts=self.max_attempts,
        )

    def _backoff(self, retry_number: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** (retry_number - 1)))
        # Half fixed, half random: spread out forks that failed together without collapsing to zero.
        return ceiling * (0.5 + self._jitter() / 2)

    def _post(self, body: bytes) -> tuple[int, str]:
        try:
            response = self._opener(
                self.endpoint.url,
                data=body,
                method='POST',
                headers={'Content-Type': 'application/json', 'Accept': 'application/json'},
                http_agent=USER_AGENT,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                ca_path=self.ca_path,
                follow_redirects='none',
                use_proxy=True,
                use_netrc=False,
            )
            with response:
                return response.getcode(), self._read(response)
        except HTTPError as exc:
            raise self._http_error(exc) from None
        except (socket.timeout, TimeoutError):
            raise _Retryable(f'no answer within the {self.timeout:g} s timeout') from None
        except URLError as exc:
            raise self._url_error(exc) from None
        except (ssl.SSLCertVerificationError, _urls().SSLValidationError) as exc:
            raise SendError(self._tls_message(exc), None, 0) from None
        except ssl.SSLError as exc:
            raise self._tls_broken(exc) from None
        except (HTTPException, _urls().ConnectionError, OSError) as exc:
            raise _Retryable(f'the connection failed ({self._describe(exc)})') from None

    def _http_error(self, exc: HTTPError) -> Exception:
        status = exc.code
        text = self._read(exc)
        answer = f'HTTP {status}' + (f': {text}' if text else '')
        if status == 429 or status >= 500:
            return _Retryable(f'Temperstack answered {answer}', status, _retry_after(exc.headers))
        if status in _KEY_REJECTED:
            message = f'the integration key was rejected by {self.endpoint.masked_url} ({answer})'
        elif 300 <= status < 400:
            location = self.endpoint.mask(exc.headers.get('Location', '') if exc.headers else '')
            message = (
                f'Temperstack answered with a redirect ({answer}) to {location or "an unknown location"}; '
                'configure the final webhook URL'
            )
        else:
            message = f'Temperstack refused the alert ({answer})'
        return SendError(message, status, 0)

    def _url_error(self, exc: URLError) -> Exception:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return _Retryable(f'no answer within the {self.timeout:g} s timeout')
        if isinstance(reason, ssl.SSLCertVerificationError):
            return SendError(self._tls_message(reason), None, 0)
        if isinstance(reason, ssl.SSLError):
            return self._tls_broken(reason)
        return _Retryable(f'the connection failed ({self._describe(reason)})')

    def _tls_broken(self, exc: ssl.SSLError) -> _Retryable:
        # Only a refused certificate is final. An EOF or a reset during the handshake is what a proxy or a load
        # balancer does while it restarts or fails over; the next attempt usually gets through.
        # str(), because an SSLError's reason alone ("UNEXPECTED_EOF_WHILE_READING") drops OpenSSL's explanation.
        return _Retryable(f'the TLS connection failed ({self.endpoint.mask(str(exc) or type(exc).__name__)})')

    def _tls_message(self, exc: BaseException) -> str:
        described = self._describe(exc)
        # A failed verification says only CERTIFICATE_VERIFY_FAILED; OpenSSL's own words tell an expired
        # certificate from an unknown CA or a wrong host name.
        verify_message = getattr(exc, 'verify_message', None)
        if verify_message and verify_message not in described:
            described = f'{described}: {self.endpoint.mask(str(verify_message))}'
        return (
            f'TLS verification of {self.endpoint.masked_url} failed ({described}); '
            'set ca_path to the CA bundle that signed it, or validate_certs=false only for testing'
        )

    def _describe(self, exc: t.Any) -> str:
        return self.endpoint.mask(str(getattr(exc, 'reason', None) or exc or type(exc).__name__))

    def _read(self, response: t.Any) -> str:
        try:
            raw = response.read(MAX_RESPONSE_CHARS * 4 + 1)
        except Exception:  # a body we cannot read must not hide the status we already have
            return ''
        text = raw.decode('utf-8', 'replace') if isinstance(raw, bytes) else str(raw or '')
        text = ' '.join(text.split())
        if len(text) > MAX_RESPONSE_CHARS:
            text = text[:MAX_RESPONSE_CHARS] + '...'
        return self.endpoint.mask(text)


def _retry_after(headers: t.Any) -> float | None:
    value = headers.get('Retry-After') if headers else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())
