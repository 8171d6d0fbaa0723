#!/usr/bin/env python
# Copyright: Temperstack alerting collection maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Temperstack stand-in server for tests and demos (Python standard library only).

Imitates ``POST /api/integration/webhook/<KEY>`` of Temperstack, enforcing the
webhook contract strictly, records every webhook request in memory and exposes
a small JSON control API under ``/_stand_in/``.  See README.md next to this file.

Sub-commands::

    serve     run the server on 127.0.0.1 until SIGTERM/SIGINT
    timeline  print the recorded requests of a running server as a table
    wait      wait for a server's port file and health check, print its base URL
"""

import argparse
import copy
import datetime
import http.server
import json
import os
import signal
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http import HTTPStatus

WEBHOOK_PREFIX = "/api/integration/webhook/"
CONTROL_PREFIX = "/_stand_in/"

REQUIRED_FIELDS = ("alert_name", "status")
OPTIONAL_FIELDS = (
    "alert_priority", "alert_id", "description", "alert_url", "metric_name",
    "resource_id", "resource_name", "resource_type", "run_book_url",
)
ALLOWED_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
ALLOWED_STATUS = ("Alarm", "OK")
ALLOWED_PRIORITY = ("Critical", "Medium")

RECORDED_HEADERS = ("Content-Type", "User-Agent", "Content-Length", "Transfer-Encoding")
MAX_BODY = 4 * 1024 * 1024
DEFAULT_HANG_SECONDS = 30.0
MASK = "****"


# --------------------------------------------------------------------------
# Contract validation
# --------------------------------------------------------------------------

def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _DuplicateField(ValueError):
    pass


def _no_duplicates(pairs):
    result = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateField(name)
        result[name] = value
    return result


def _reject_constant(name):
    raise ValueError("%s is not valid JSON" % name)


def parse_json(text):
    """Strict JSON parsing: no NaN/Infinity, no duplicate object keys."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def validate_webhook(content_type, body):
    """Return a list of contract violations (empty list: request is valid)."""
    errors = []
    media_type, _sep, params = (content_type or "").partition(";")
    if media_type.strip().lower() != "application/json":
        errors.append("Content-Type must be application/json (got %s)"
                      % (repr(content_type) if content_type is not None else "none"))
    else:
        for param in params.split(";"):
            pname, _eq, pvalue = param.partition("=")
            if pname.strip().lower() == "charset" and pvalue.strip().strip('"').lower() not in ("utf-8", "utf8"):
                errors.append("Content-Type charset must be utf-8 (got %r)" % pvalue.strip())

    if not body:
        errors.append("request body is empty; expected a JSON object")
        return errors
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        errors.append("request body is not valid UTF-8")
        return errors
    try:
        data = parse_json(text)
    except _DuplicateField as exc:
        errors.append("duplicate field %r in request body" % str(exc))
        return errors
    except ValueError as exc:
        errors.append("request body is not valid JSON: %s" % exc)
        return errors
    if not isinstance(data, dict):
        errors.append("request body must be a JSON object (got %s)" % _json_type(data))
        return errors

    unknown = sorted(name for name in data if name not in ALLOWED_FIELDS)
    if unknown:
        errors.append("unknown field(s): %s" % ", ".join(repr(name) for name in unknown))
    for name in ALLOWED_FIELDS:
        if name in data and not isinstance(data[name], str):
            errors.append("field %r must be a string (got %s)" % (name, _json_type(data[name])))
    for name in REQUIRED_FIELDS:
        if name not in data:
            errors.append("missing required field %r" % name)
        elif isinstance(data[name], str) and not data[name].strip():
            errors.append("field %r must not be empty" % name)
    status = data.get("status")
    if isinstance(status, str) and status.strip() and status not in ALLOWED_STATUS:
        errors.append("field 'status' must be exactly 'Alarm' or 'OK' (got %r)" % status)
    priority = data.get("alert_priority")
    if isinstance(priority, str) and priority not in ALLOWED_PRIORITY:
        errors.append("field 'alert_priority' must be exactly 'Critical' or 'Medium' (got %r)" % priority)
    return errors


# --------------------------------------------------------------------------
# Scripted responses
# --------------------------------------------------------------------------

def normalize_script_item(item):
    """Validate one scripted response item; return a normalized copy or raise ValueError."""
    if not isinstance(item, dict):
        raise ValueError("each scripted response must be a JSON object")
    item = dict(item)
    repeat = item.pop("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError("'repeat' must be an integer >= 1")
    action = item.get("action")
    if action is not None:
        if action == "hang":
            allowed = {"action", "seconds"}
            seconds = item.get("seconds", DEFAULT_HANG_SECONDS)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                raise ValueError("hang 'seconds' must be a number >= 0")
            item["seconds"] = float(seconds)
        elif action == "drop":
            allowed = {"action"}
        elif action == "reset":
            allowed = {"action"}
        elif action == "truncate":
            allowed = {"action", "status"}
            status = item.setdefault("status", 200)
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                raise ValueError("truncate 'status' must be an integer between 200 and 599")
        elif action == "redirect":
            allowed = {"action", "location", "status"}
            if not isinstance(item.get("location"), str) or not item["location"]:
                raise ValueError("redirect needs a non-empty string 'location'")
            status = item.setdefault("status", 302)
            if status not in (301, 302, 303, 307, 308):
                raise ValueError("redirect 'status' must be one of 301, 302, 303, 307, 308")
        else:
            raise ValueError("unknown action %r (expected hang, drop, reset, truncate or redirect)" % (action,))
    else:
        allowed = {"status", "body", "retry_after", "content_type", "headers"}
        status = item.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError("scripted response needs an integer 'status' between 200 and 599 (or an 'action')")
        if "retry_after" in item:
            retry_after = item["retry_after"]
            if isinstance(retry_after, bool) or not isinstance(retry_after, (str, int, float)):
                raise ValueError("'retry_after' must be a string or a number")
            item["retry_after"] = str(retry_after)
        if "content_type" in item and not isinstance(item["content_type"], str):
            raise ValueError("'content_type' must be a string")
        headers = item.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ValueError("'headers' must be an object of string values")
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ValueError("unknown key(s) in scripted response: %s" % ", ".join(unknown))
    return item, repeat


# --------------------------------------------------------------------------
# Shared state
# --------------------------------------------------------------------------

class State:
    """Thread-safe store of recorded requests and scripted responses."""

    def __init__(self):
        self._lock = threading.Lock()
        self._records = []
        self._seq = 0
        self._script = []  # list of [item, remaining]
        self._release = threading.Event()
        self._latency = 0.0
        self._in_flight = 0
        self._peak_in_flight = 0

    @property
    def latency(self):
        with self._lock:
            return self._latency

    def set_latency(self, seconds):
        with self._lock:
            self._latency = float(seconds)

    def enter(self):
        """A webhook request is being handled (counted until leave())."""
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)

    def leave(self):
        with self._lock:
            self._in_flight -= 1

    def stats(self):
        with self._lock:
            return {
                "requests": self._seq,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
                "latency": self._latency,
            }

    def add_record(self, record):
        with self._lock:
            self._seq += 1
            record["seq"] = self._seq
            self._records.append(record)

    def records(self, delivered=None):
        with self._lock:
            selected = [r for r in self._records if delivered is None or r["delivered"] == delivered]
            return copy.deepcopy(selected)

    def set_script(self, entries):
        with self._lock:
            self._script = [[item, repeat] for item, repeat in entries]

    def script(self):
        with self._lock:
            return [dict(item, repeat=remaining) for item, remaining in self._script]

    def next_scripted(self):
        with self._lock:
            if not self._script:
                return None
            entry = self._script[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._script.pop(0)
            return dict(entry[0])

    def hang_event(self):
        with self._lock:
            return self._release

    def reset(self):
        with self._lock:
            self._records = []
            self._seq = 0
            self._script = []
            self._peak_in_flight = self._in_flight
            release, self._release = self._release, threading.Event()
        release.set()

    def release_all(self):
        with self._lock:
            release = self._release
        release.set()


class RequestLog:
    """Append-only request log; integration keys never reach it."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8") if path else None  # pylint: disable=consider-using-with

    def write(self, method, masked_path, status):
        if self._file is None:
            return
        stamp = datetime.datetime.now().isoformat(timespec="milliseconds")
        line = "%s %s %s %s\n" % (stamp, method or "-", masked_path or "-", status)
        with self._lock:
            try:
                self._file.write(line)
                self._file.flush()
            except (OSError, ValueError):
                pass

    def close(self):
        if self._file is not None:
            with self._lock:
                self._file.close()


def mask_path(path):
    """Replace the integration key in a request path (or absolute URL, as a proxy gets it) by ****."""
    if path is None:
        return None
    if not path.startswith("/") and "://" in path:
        # absolute-form request target (RFC 9112, 3.2.2): the stand-in used as an HTTP proxy
        scheme, rest = path.split("://", 1)
        slash = rest.find("/")
        if slash != -1:
            return "%s://%s%s" % (scheme, rest[:slash], mask_path(rest[slash:]))
        return path
    if path.startswith(WEBHOOK_PREFIX):
        rest = path[len(WEBHOOK_PREFIX):]
        cut = len(rest)
        for sep in "?#":
            pos = rest.find(sep)
            if pos != -1:
                cut = min(cut, pos)
        return WEBHOOK_PREFIX + MASK + rest[cut:]
    return path


# --------------------------------------------------------------------------
# HTTP handling
# --------------------------------------------------------------------------

class _BodyError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class _Disconnected(Exception):
    pass


_CLIENT_GONE = (ConnectionError, TimeoutError, socket.timeout, ssl.SSLError, _Disconnected)


class StandInHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TemperstackStandIn/1.0"
    sys_version = ""
    timeout = 60  # per-socket timeout while reading a request

    # -- quiet ------------------------------------------------------------
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    def handle(self):
        try:
            super().handle()
        except _CLIENT_GONE:
            self.close_connection = True

    # -- response helpers -------------------------------------------------
    def _log(self, status):
        self.server.request_log.write(getattr(self, "command", None), mask_path(getattr(self, "path", None)), status)

    def _respond(self, status, body=b"", content_type="application/json", headers=None):
        """Send the complete response (status line, headers, body) in one write."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        bodyless = status in (204, 304) or 100 <= status < 200
        lines = [
            "%s %d %s" % (self.protocol_version, status, phrase),
            "Server: %s" % self.server_version,
            "Date: %s" % self.date_time_string(),
            "Connection: close",
        ]
        if not bodyless:
            if content_type:
                lines.append("Content-Type: %s" % content_type)
            lines.append("Content-Length: %d" % len(body))
        for name, value in (headers or {}).items():
            lines.append("%s: %s" % (name, value))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if not bodyless and getattr(self, "command", None) != "HEAD":
            data += body
        self._log(status)
        try:
            self.wfile.write(data)
        except _CLIENT_GONE:
            pass

    def _respond_json(self, status, payload, headers=None):
        self._respond(status, json.dumps(payload).encode("utf-8"), "application/json", headers)

    def send_error(self, code, message=None, explain=None):
        # Used by BaseHTTPRequestHandler for malformed requests / unsupported methods.
        try:
            default = HTTPStatus(code).phrase
        except ValueError:
            default = "error"
        self._respond_json(code, {"error": message or default})

    # -- body -------------------------------------------------------------
    def _read_exact(self, size):
        data = self.rfile.read(size)
        if len(data) < size:
            raise _Disconnected()
        return data

    def _read_body(self):
        transfer_encoding = self.headers.get("Transfer-Encoding")
        if transfer_encoding:
            codings = [c.strip().lower() for c in transfer_encoding.split(",") if c.strip()]
            if codings != ["chunked"]:
                raise _BodyError(501, "unsupported Transfer-Encoding %r" % transfer_encoding)
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length.strip())
            if size < 0 or not length.strip().isdigit():
                raise ValueError()
        except ValueError:
            raise _BodyError(400, "invalid Content-Length %r" % length) from None
        if size > MAX_BODY:
            raise _BodyError(413, "request body too large (%d bytes, limit %d)" % (size, MAX_BODY))
        return self._read_exact(size)

    def _read_chunked(self):
        chunks = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            if not line:
                raise _Disconnected()
            if not line.endswith(b"\n"):
                raise _BodyError(400, "malformed chunked body (chunk size line too long)")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
                if size < 0 or not size_text:
                    raise ValueError()
            except ValueError:
                raise _BodyError(400, "malformed chunked body (bad chunk size %r)" % size_text.decode("latin-1")) from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise _BodyError(413, "request body too large (limit %d bytes)" % MAX_BODY)
            chunks.append(self._read_exact(size))
            if self._read_exact(2) not in (b"\r\n",):
                raise _BodyError(400, "malformed chunked body (missing CRLF after chunk data)")
        # trailer section, ends with an empty line
        for _count in range(100):
            line = self.rfile.readline(8192)
            if not line:
                raise _Disconnected()
            if line in (b"\r\n", b"\n"):
                break
        return b"".join(chunks)

    # -- dispatch ---------------------------------------------------------
    def do_GET(self):  # pylint: disable=invalid-name
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self):
        self.close_connection = True
        received = time.time()
        split = urllib.parse.urlsplit(self.path)
        route = split.path
        body_error = None
        try:
            body = self._read_body()
        except _BodyError as exc:
            body, body_error = b"", exc
        if route.startswith(WEBHOOK_PREFIX):
            self._webhook(received, route, body, body_error)
        elif body_error is not None:
            self._respond_json(body_error.status, {"error": body_error.message})
        elif route.startswith(CONTROL_PREFIX):
            self._control(route[len(CONTROL_PREFIX):], split.query, body)
        else:
            self._respond_json(404, {"error": "not found"})

    # -- webhook ----------------------------------------------------------
    def _new_record(self, received, route, body):
        headers = {}
        for name in RECORDED_HEADERS:
            value = self.headers.get(name)
            if value is not None:
                headers[name] = value
        text = body.decode("utf-8", "replace")
        try:
            parsed = json.loads(text, parse_constant=_reject_constant) if text else None
        except ValueError:
            parsed = None
        return {
            "seq": None,
            "time": received,
            "method": self.command,
            "path": self.path,
            "key": urllib.parse.unquote(route[len(WEBHOOK_PREFIX):]),
            "headers": headers,
            "body": text,
            "json": parsed,
            "response_status": None,
            "delivered": False,
            "outcome": "response",
            "error": None,
            "scripted": None,
        }

    def _finish(self, record, status, payload=None, body=None, content_type="application/json", headers=None):
        """Record the request *before* answering, so a client never sees a response before its record."""
        record["response_status"] = status
        record["delivered"] = status == 200
        if isinstance(payload, dict) and "error" in payload:
            record["error"] = payload["error"]
        self.server.state.add_record(record)
        if payload is not None:
            self._respond_json(status, payload, headers)
        else:
            self._respond(status, body or b"", content_type, headers)

    def _webhook(self, received, route, body, body_error):
        state = self.server.state
        state.enter()
        try:
            latency = state.latency
            if latency > 0:
                # Injected latency: every webhook request waits this long before it is answered (or scripted).
                time.sleep(latency)
            self._answer_webhook(received, route, body, body_error)
        finally:
            state.leave()

    def _answer_webhook(self, received, route, body, body_error):
        record = self._new_record(received, route, body)
        if body_error is not None:
            self._finish(record, body_error.status, {"error": body_error.message})
            return
        if self.command != "POST":
            self._finish(record, 405, {"error": "method not allowed; use POST"}, headers={"Allow": "POST"})
            return
        item = self.server.state.next_scripted()
        if item is not None:
            record["scripted"] = dict(item)
            self._scripted(record, item)
            return
        key = record["key"]
        if not key or "/" in key or (self.server.keys is not None and key not in self.server.keys):
            self._finish(record, 404, {"error": "unknown integration key"})
            return
        errors = validate_webhook(self.headers.get("Content-Type"), body)
        if errors:
            self._finish(record, 400, {"error": "; ".join(errors), "errors": errors})
            return
        self._finish(record, 200, {"status": "success"})

    def _scripted(self, record, item):
        action = item.get("action")
        if action in ("hang", "drop"):
            record["outcome"] = action
            self.server.state.add_record(record)
            self._log(action.upper())
            if action == "hang":
                release = self.server.state.hang_event()
                release.wait(item["seconds"])
            self._drop_connection()
        elif action == "reset":
            record["outcome"] = action
            self.server.state.add_record(record)
            self._log("RESET")
            self._reset_connection()
        elif action == "truncate":
            # The status line, the headers and half of the body, then a TCP reset: "connection reset mid-body".
            status = item["status"]
            record["outcome"] = action
            record["response_status"] = status
            record["delivered"] = status == 200
            self.server.state.add_record(record)
            body = json.dumps({"status": "success"} if status == 200 else {"error": "scripted %d response" % status})
            head = "%s %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
                self.protocol_version, status, HTTPStatus(status).phrase, len(body))
            self._log("TRUNCATE")
            try:
                self.wfile.write(head.encode("latin-1") + body.encode("utf-8")[:len(body) // 2])
                self.wfile.flush()
            except _CLIENT_GONE:
                pass
            self._reset_connection()
        elif action == "redirect":
            self._finish(record, item["status"], {"redirect": item["location"]}, headers={"Location": item["location"]})
        else:
            status = item["status"]
            headers = dict(item.get("headers", {}))
            if "retry_after" in item:
                headers["Retry-After"] = item["retry_after"]
            if "body" not in item:
                payload = {"status": "success"} if status == 200 else {"error": "scripted %d response" % status}
                body, content_type = json.dumps(payload).encode("utf-8"), "application/json"
            elif isinstance(item["body"], str):
                body, content_type = item["body"].encode("utf-8"), "text/plain; charset=utf-8"
            else:
                body, content_type = json.dumps(item["body"]).encode("utf-8"), "application/json"
            content_type = item.get("content_type", content_type)
            self._finish(record, status, body=body, content_type=content_type, headers=headers)

    def _reset_connection(self):
        """Abort the connection with a TCP reset (RST) instead of an orderly close."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _drop_connection(self):
        """Close the connection without sending anything."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- control API ------------------------------------------------------
    def _control(self, name, query, body):
        method = self.command
        if method == "HEAD":
            method = "GET"
        routes = {
            "health": ("GET",),
            "requests": ("GET",),
            "reset": ("POST",),
            "script": ("GET", "POST"),
            "latency": ("GET", "POST"),
            "stats": ("GET",),
        }
        if name not in routes:
            self._respond_json(404, {"error": "not found"})
            return
        if method not in routes[name]:
            self._respond_json(405, {"error": "method not allowed"}, headers={"Allow": ", ".join(routes[name])})
            return
        state = self.server.state
        if name == "health":
            self._respond_json(200, {"ok": True})
        elif name == "requests":
            params = urllib.parse.parse_qs(query)
            delivered = None
            if "delivered" in params:
                flag = params["delivered"][-1].strip().lower()
                if flag in ("1", "true", "yes"):
                    delivered = True
                elif flag in ("0", "false", "no"):
                    delivered = False
                else:
                    self._respond_json(400, {"error": "delivered must be 1 or 0"})
                    return
            self._respond_json(200, state.records(delivered))
        elif name == "reset":
            state.reset()
            self._respond_json(200, {"ok": True})
        elif name == "stats":
            self._respond_json(200, state.stats())
        elif name == "latency":
            if method == "POST":
                try:
                    data = json.loads(body.decode("utf-8") or "null")
                    seconds = data.get("seconds") if isinstance(data, dict) else None
                    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 60:
                        raise ValueError("body must be a JSON object {\"seconds\": N} with 0 <= N <= 60")
                except ValueError as exc:
                    self._respond_json(400, {"error": str(exc)})
                    return
                state.set_latency(seconds)
            self._respond_json(200, {"seconds": state.latency})
        elif method == "GET":
            self._respond_json(200, {"responses": state.script()})
        else:
            try:
                data = json.loads(body.decode("utf-8") or "null")
                if not isinstance(data, dict) or not isinstance(data.get("responses"), list):
                    raise ValueError("body must be a JSON object {\"responses\": [...]}")
                entries = [normalize_script_item(item) for item in data["responses"]]
            except ValueError as exc:  # includes JSON and UTF-8 decoding errors
                self._respond_json(400, {"error": str(exc)})
                return
            state.set_script(entries)
            self._respond_json(200, {"ok": True, "queued": sum(repeat for _item, repeat in entries)})


class StandInServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, port, state, keys=None, request_log=None, ssl_context=None):
        self.state = state
        self.keys = keys
        self.request_log = request_log or RequestLog(None)
        self.ssl_context = ssl_context
        super().__init__(("127.0.0.1", port), StandInHandler)

    def server_bind(self):
        # HTTPServer.server_bind() calls socket.getfqdn(), which can stall on a
        # misconfigured resolver; 127.0.0.1 is all we ever need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.ssl_context is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        request.settimeout(StandInHandler.timeout)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, _CLIENT_GONE):
            return
        super().handle_error(request, client_address)

    @property
    def base_url(self):
        scheme = "https" if self.ssl_context else "http"
        return "%s://127.0.0.1:%d" % (scheme, self.server_address[1])


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".port-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cmd_serve(args):
    keys = None
    if args.keys is not None:
        keys = {k.strip() for k in args.keys.split(",") if k.strip()}
    ssl_context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("--tls-cert and --tls-key must be given together", file=sys.stderr)
            return 2
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    request_log = RequestLog(args.log)
    if not 0 <= args.latency <= 60:
        print("--latency must be between 0 and 60 seconds", file=sys.stderr)
        return 2
    state = State()
    state.set_latency(args.latency)
    server = StandInServer(args.port, state, keys=keys, request_log=request_log, ssl_context=ssl_context)
    stop = threading.Event()

    def on_signal(_signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    worker.start()
    port = server.server_address[1]
    if args.port_file:
        write_atomic(args.port_file, "%d\n" % port)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        state.release_all()
        server.shutdown()
        server.server_close()
        request_log.close()
        if args.port_file:
            try:
                with open(args.port_file, encoding="utf-8") as handle:
                    mine = handle.read().strip() == str(port)
                if mine:
                    os.unlink(args.port_file)
            except OSError:
                pass
    return 0


def _open_url(url, data=None, method=None, timeout=5.0):
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # nosec - local test server
        return json.loads(response.read().decode("utf-8"))


def _cell(value):
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ") or "''"


def format_timeline(records, integrations=None):
    """The records as a table; with ``integrations`` (key -> name), a column naming each request's integration."""
    header = ("TIME", "CODE", "STATUS", "ALERT_ID", "ALERT_NAME")
    if integrations is not None:
        header = ("TIME", "CODE", "INTEGRATION", "STATUS", "ALERT_ID", "ALERT_NAME")
    rows = [header]
    for record in records:
        stamp = datetime.datetime.fromtimestamp(record["time"])
        data = record.get("json") if isinstance(record.get("json"), dict) else {}
        code = record.get("response_status")
        if code is None:
            code = (record.get("outcome") or "-").upper()
        row = [stamp.strftime("%H:%M:%S.") + "%03d" % (stamp.microsecond // 1000), str(code)]
        if integrations is not None:
            # Never the key itself: a key the mapping does not name is shown as unknown.
            row.append(integrations.get(record.get("key"), "(unknown)"))
        row += [_cell(data.get("status")), _cell(data.get("alert_id")), _cell(data.get("alert_name"))]
        rows.append(tuple(row))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1])
    return "\n".join(lines)


def cmd_timeline(args):
    try:
        records = _open_url(args.url.rstrip("/") + "/_stand_in/requests")
    except (OSError, ValueError) as exc:
        print("cannot fetch requests from %s: %s" % (args.url, exc), file=sys.stderr)
        return 1
    integrations = None
    if args.integrations_env:
        pairs = os.environ.get(args.integrations_env, "").split(",")
        integrations = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    print(format_timeline(records, integrations))
    return 0


def wait_for_server(port_file, timeout=10.0, tls=False):
    """Wait for the port file and a healthy server; return the base URL or None."""
    deadline = time.monotonic() + timeout
    scheme = "https" if tls else "http"
    while time.monotonic() < deadline:
        try:
            with open(port_file, encoding="utf-8") as handle:
                port = int(handle.read().strip())
        except (OSError, ValueError):
            port = None
        if port:
            url = "%s://127.0.0.1:%d" % (scheme, port)
            try:
                if _open_url(url + "/_stand_in/health", timeout=max(0.2, min(2.0, deadline - time.monotonic()))).get("ok"):
                    return url
            except (OSError, ValueError, AttributeError):
                pass
        time.sleep(0.05)
    return None


def cmd_wait(args):
    url = wait_for_server(args.port_file, args.timeout, args.tls)
    if url is None:
        print("stand-in not ready after %gs (port file %s)" % (args.timeout, args.port_file), file=sys.stderr)
        return 1
    print(url)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="Temperstack stand-in server for tests and demos")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the stand-in on 127.0.0.1 until SIGTERM/SIGINT")
    serve.add_argument("--port", type=int, default=0, help="port to listen on (0: pick a free one)")
    serve.add_argument("--port-file", help="write the chosen port here (atomically) once listening")
    serve.add_argument("--log", help="append one line per request (key masked) to this file")
    serve.add_argument("--keys", help="comma-separated accepted integration keys (default: any non-empty key)")
    serve.add_argument("--latency", type=float, default=0.0,
                       help="seconds every webhook request waits before it is answered (default 0)")
    serve.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.set_defaults(func=cmd_serve)

    timeline = sub.add_parser("timeline", help="print the recorded requests as a table")
    timeline.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:PORT")
    timeline.add_argument(
        "--integrations-env", metavar="VAR",
        help="name an INTEGRATION column from the environment variable VAR, KEY=NAME pairs separated by commas "
             "(keys never on a command line)",
    )
    timeline.set_defaults(func=cmd_timeline)

    wait = sub.add_parser("wait", help="wait until the server is up, print its base URL")
    wait.add_argument("--port-file", required=True)
    wait.add_argument("--timeout", type=float, default=10.0)
    wait.add_argument("--tls", action="store_true", help="the server uses TLS (print an https URL)")
    wait.set_defaults(func=cmd_wait)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
