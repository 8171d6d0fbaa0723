# Copyright: Temperstack alerting collection maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for tests that use the Temperstack stand-in (standard library only).

    from client import start_stand_in, requests, reset, script, set_latency, stats

    with start_stand_in(tmp_path, keys=["k1"]) as base_url:
        script(base_url, [{"status": 500, "retry_after": "1"}])
        ...
        assert requests(base_url, delivered=True)[0]["json"]["status"] == "Alarm"
"""

import contextlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "temperstack_stand_in.py")
WEBHOOK_PREFIX = "/api/integration/webhook/"


def _call(base_url, path, payload=None, method="GET", timeout=5.0):
    data = None
    headers = {}
    if payload is not None:
        data = json.dumps(payload).encode("utf-8")
        headers["Content-Type"] = "application/json"
    context = None
    if base_url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # nosec - local test server
        return json.loads(response.read().decode("utf-8"))


def health(base_url):
    """True when the stand-in answers its health check."""
    try:
        return bool(_call(base_url, "/_stand_in/health", timeout=2.0).get("ok"))
    except (OSError, ValueError):
        return False


def requests(base_url, delivered=None):
    """Recorded webhook requests (oldest first); delivered=True/False filters on 200 answers."""
    path = "/_stand_in/requests"
    if delivered is not None:
        path += "?delivered=%d" % (1 if delivered else 0)
    return _call(base_url, path)


def reset(base_url):
    """Forget recorded requests and scripted responses; releases hanging requests."""
    return _call(base_url, "/_stand_in/reset", payload={}, method="POST")


def script(base_url, responses):
    """Replace the queue of scripted responses (consumed one per webhook POST, FIFO)."""
    return _call(base_url, "/_stand_in/script", payload={"responses": list(responses)}, method="POST")


def pending_script(base_url):
    """Scripted responses not consumed yet."""
    return _call(base_url, "/_stand_in/script")["responses"]


def set_latency(base_url, seconds):
    """Make every webhook request wait ``seconds`` before it is answered (0 turns it off)."""
    return _call(base_url, "/_stand_in/latency", payload={"seconds": seconds}, method="POST")


def stats(base_url):
    """Counters: requests recorded, webhook requests in flight now and at most since the last reset, latency."""
    return _call(base_url, "/_stand_in/stats")


def webhook_url(base_url, key):
    return base_url.rstrip("/") + WEBHOOK_PREFIX + key


@contextlib.contextmanager
def start_stand_in(tmpdir, port=0, keys=None, log=None, tls_cert=None, tls_key=None, timeout=10.0, latency=None):
    """Run the stand-in as a subprocess; yield its base URL; terminate it afterwards.

    keys: list of accepted integration keys (or a comma-separated string); None accepts any key.
    log: path of the request log (keys masked). tls_cert/tls_key: serve HTTPS.
    latency: seconds every webhook request waits before it is answered.
    """
    workdir = tempfile.mkdtemp(prefix="stand_in-", dir=str(tmpdir))
    port_file = os.path.join(workdir, "port")
    stderr_path = os.path.join(workdir, "stderr.txt")
    command = [sys.executable, SERVER_SCRIPT, "serve", "--port", str(port), "--port-file", port_file]
    if keys is not None:
        command += ["--keys", keys if isinstance(keys, str) else ",".join(keys)]
    if log is not None:
        command += ["--log", str(log)]
    if tls_cert or tls_key:
        command += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
    if latency is not None:
        command += ["--latency", str(latency)]
    scheme = "https" if tls_cert else "http"

    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)  # pylint: disable=consider-using-with
    try:
        base_url = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                with open(port_file, encoding="utf-8") as handle:
                    text = handle.read().strip()
            except OSError:
                text = ""
            if text.isdigit():
                candidate = "%s://127.0.0.1:%s" % (scheme, text)
                if health(candidate):
                    base_url = candidate
                    break
            time.sleep(0.02)
        if base_url is None:
            with open(stderr_path, encoding="utf-8", errors="replace") as handle:
                detail = handle.read().strip()
            raise RuntimeError("Temperstack stand-in did not start (exit code %s): %s" % (process.poll(), detail or "no output"))
        yield base_url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
