# Copyright: Temperstack alerting collection maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Self-test of the Temperstack stand-in server (pytest; standard library otherwise)."""

import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "temperstack_stand_in.py")

_spec = importlib.util.spec_from_file_location("temperstack_stand_in_client", os.path.join(HERE, "client.py"))
stand_in = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stand_in)

KEY = "test-key-1234"
OTHER_KEY = "other-key-5678"
VALID = {"alert_name": "Multiple requests are failing.", "status": "Alarm", "alert_priority": "Critical", "alert_id": "a-1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stand_in")
    log = tmp / "requests.log"
    with stand_in.start_stand_in(tmp, keys=[KEY, OTHER_KEY], log=log) as base_url:
        yield {"url": base_url, "log": log}


@pytest.fixture()
def base_url(server):
    stand_in.reset(server["url"])
    yield server["url"]


def post(base_url, key=KEY, body=None, content_type="application/json", raw=None, method="POST", headers=None, timeout=5):
    """Raw HTTP exchange (no redirect following); returns (status, headers, body text)."""
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = dict(headers or {})
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        conn.request(method, "/api/integration/webhook/" + key, body=data, headers=hdrs)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def test_valid_alert_is_recorded(base_url):
    status, headers, body = post(base_url, body=VALID, headers={"User-Agent": "pytest"})
    assert (status, json.loads(body)) == (200, {"status": "success"})
    assert headers["Content-Type"] == "application/json"
    records = stand_in.requests(base_url)
    assert len(records) == 1
    record = records[0]
    assert record["seq"] == 1
    assert record["method"] == "POST"
    assert record["path"] == "/api/integration/webhook/" + KEY
    assert record["key"] == KEY
    assert record["json"] == VALID
    assert json.loads(record["body"]) == VALID
    assert record["headers"]["Content-Type"] == "application/json"
    assert record["headers"]["User-Agent"] == "pytest"
    assert record["headers"]["Content-Length"] == str(len(record["body"]))
    assert record["response_status"] == 200 and record["delivered"] is True
    assert abs(record["time"] - time.time()) < 60


def test_all_fields_and_charset_accepted(base_url):
    full = {name: "v" for name in ("alert_id", "description", "alert_url", "metric_name", "resource_id",
                                   "resource_name", "resource_type", "run_book_url")}
    full.update(alert_name="n", status="OK", alert_priority="Medium")
    assert post(base_url, body=full, content_type="application/json; charset=utf-8")[0] == 200


@pytest.mark.parametrize("content_type, raw, reason", [
    ("text/plain", json.dumps(VALID).encode(), "Content-Type must be application/json"),
    (None, json.dumps(VALID).encode(), "Content-Type must be application/json"),
    ("application/json", b"", "body is empty"),
    ("application/json", b"{not json", "not valid JSON"),
    ("application/json", b"\xff\xfe", "not valid UTF-8"),
    ("application/json", b'["Alarm"]', "must be a JSON object (got array)"),
    ("application/json", b'{"alert_name": "a", "status": "OK", "severity": "x"}', "unknown field(s): 'severity'"),
    ("application/json", b'{"alert_name": "a", "status": "OK", "alert_id": 7}', "'alert_id' must be a string (got number)"),
    ("application/json", b'{"alert_name": "a", "status": "OK", "description": null}', "'description' must be a string (got null)"),
    ("application/json", b'{"status": "OK"}', "missing required field 'alert_name'"),
    ("application/json", b'{"alert_name": "a"}', "missing required field 'status'"),
    ("application/json", b'{"alert_name": "", "status": "OK"}', "'alert_name' must not be empty"),
    ("application/json", b'{"alert_name": "a", "status": ""}', "'status' must not be empty"),
    ("application/json", b'{"alert_name": "a", "status": "alarm"}', "'status' must be exactly 'Alarm' or 'OK'"),
    ("application/json", b'{"alert_name": "a", "status": "Resolved"}', "'status' must be exactly 'Alarm' or 'OK'"),
    ("application/json", b'{"alert_name": "a", "status": "OK", "alert_priority": "High"}', "'alert_priority' must be exactly"),
    ("application/json", b'{"alert_name": "a", "status": "OK", "alert_priority": "critical"}', "'alert_priority' must be exactly"),
    ("application/json", b'{"alert_name": "a", "alert_name": "b", "status": "OK"}', "duplicate field 'alert_name'"),
])
def test_contract_violations_are_rejected(base_url, content_type, raw, reason):
    status, _headers, body = post(base_url, raw=raw, content_type=content_type)
    assert status == 400
    assert reason in json.loads(body)["error"]
    (record,) = stand_in.requests(base_url)
    assert record["response_status"] == 400 and record["delivered"] is False
    assert reason in record["error"]
    assert stand_in.requests(base_url, delivered=True) == []


def test_unknown_key_method_and_path(base_url):
    status, _headers, body = post(base_url, key="nope", body=VALID)
    assert (status, json.loads(body)) == (404, {"error": "unknown integration key"})
    assert post(base_url, key=OTHER_KEY, body=VALID)[0] == 200
    status, headers, _body = post(base_url, method="GET", content_type=None)
    assert status == 405 and headers["Allow"] == "POST"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base_url + "/elsewhere", timeout=5)  # pylint: disable=consider-using-with
    assert info.value.code == 404
    assert [r["response_status"] for r in stand_in.requests(base_url)] == [404, 200, 405]
    assert len(stand_in.requests(base_url, delivered=True)) == 1
    assert len(stand_in.requests(base_url, delivered=False)) == 2


def test_chunked_body(base_url):
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    payload = json.dumps(VALID).encode()
    conn.request("POST", "/api/integration/webhook/" + KEY, body=iter([payload[:10], payload[10:]]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()
    (record,) = stand_in.requests(base_url)
    assert record["json"] == VALID and record["headers"]["Transfer-Encoding"] == "chunked"


def test_scripted_failures_then_normal(base_url):
    stand_in.script(base_url, [
        {"status": 500, "body": "oops", "retry_after": "2"},
        {"status": 429, "retry_after": 1, "repeat": 2},
        {"action": "redirect", "location": "http://127.0.0.1:9/elsewhere"},
        {"status": 200, "body": "not json"},
    ])
    assert len(stand_in.pending_script(base_url)) == 4
    status, headers, body = post(base_url, body=VALID)
    assert (status, headers["Retry-After"], body) == (500, "2", "oops")
    for _attempt in range(2):
        status, headers, _body = post(base_url, body=VALID)
        assert (status, headers["Retry-After"]) == (429, "1")
    status, headers, _body = post(base_url, body=VALID)
    assert (status, headers["Location"]) == (302, "http://127.0.0.1:9/elsewhere")
    assert post(base_url, body=VALID)[::2] == (200, "not json")
    assert stand_in.pending_script(base_url) == []
    assert post(base_url, body=VALID)[::2] == (200, '{"status": "success"}')
    codes = [(r["response_status"], r["delivered"]) for r in stand_in.requests(base_url)]
    assert codes == [(500, False), (429, False), (429, False), (302, False), (200, True), (200, True)]


def test_drop_closes_without_response(base_url):
    stand_in.script(base_url, [{"action": "drop"}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post(base_url, body=VALID)
    (record,) = stand_in.requests(base_url)
    assert record["outcome"] == "drop" and record["response_status"] is None and record["delivered"] is False
    assert record["json"] == VALID


def test_reset_aborts_without_response(base_url):
    stand_in.script(base_url, [{"action": "reset"}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post(base_url, body=VALID)
    (record,) = stand_in.requests(base_url)
    assert record["outcome"] == "reset" and record["response_status"] is None and record["delivered"] is False
    assert record["json"] == VALID
    assert post(base_url, body=VALID)[0] == 200


@pytest.mark.parametrize("status, delivered", [(200, True), (503, False)])
def test_truncate_resets_mid_body(base_url, status, delivered):
    stand_in.script(base_url, [{"action": "truncate", "status": status}])
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/api/integration/webhook/" + KEY, body=json.dumps(VALID).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == status
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
    finally:
        conn.close()
    (record,) = stand_in.requests(base_url)
    assert (record["outcome"], record["response_status"], record["delivered"]) == ("truncate", status, delivered)


def test_latency_delays_answers_in_parallel_and_stats_count_them(base_url):
    assert stand_in.stats(base_url)["peak_in_flight"] == 0
    assert stand_in.set_latency(base_url, 0.3) == {"seconds": 0.3}
    try:
        results = []
        started = time.monotonic()
        threads = [threading.Thread(target=lambda: results.append(post(base_url, body=VALID)[0])) for _index in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        elapsed = time.monotonic() - started
        assert results == [200] * 5
        # Five requests of 0.3 s each, answered side by side, not one after another.
        assert 0.3 <= elapsed < 1.2
        stats = stand_in.stats(base_url)
        assert stats["requests"] == 5 and stats["in_flight"] == 0 and stats["latency"] == 0.3
        assert 2 <= stats["peak_in_flight"] <= 5
        stand_in.reset(base_url)
        assert stand_in.stats(base_url)["latency"] == 0.3  # a reset keeps the latency
        assert stand_in.stats(base_url)["peak_in_flight"] == 0
    finally:
        stand_in.set_latency(base_url, 0)
    started = time.monotonic()
    assert post(base_url, body=VALID)[0] == 200
    assert time.monotonic() - started < 0.3


def test_bad_latency_is_rejected(base_url):
    for body in ({"seconds": -1}, {"seconds": 61}, {"seconds": "1"}, {"seconds": True}, {}):
        with pytest.raises(urllib.error.HTTPError) as info:
            stand_in._call(base_url, "/_stand_in/latency", payload=body, method="POST")  # pylint: disable=protected-access
        assert info.value.code == 400
    assert stand_in.stats(base_url)["latency"] == 0


def test_latency_option_of_serve(tmp_path):
    with stand_in.start_stand_in(tmp_path, latency=0.2) as url:
        started = time.monotonic()
        assert post(url, body=VALID)[0] == 200
        assert time.monotonic() - started >= 0.2
        assert stand_in.stats(url)["latency"] == 0.2


def test_hang_does_not_block_and_reset_releases(base_url):
    stand_in.script(base_url, [{"action": "hang", "seconds": 20}])
    outcome = {}

    def hanging_client():
        started = time.monotonic()
        try:
            outcome["result"] = post(base_url, body=VALID, timeout=10)
        except (http.client.HTTPException, OSError) as exc:
            outcome["result"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=hanging_client, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not stand_in.requests(base_url) and time.monotonic() < deadline:
        time.sleep(0.01)
    (record,) = stand_in.requests(base_url)
    assert record["outcome"] == "hang" and record["response_status"] is None
    started = time.monotonic()
    for _index in range(3):
        assert post(base_url, body=VALID)[0] == 200
    assert time.monotonic() - started < 1.0
    assert thread.is_alive()
    stand_in.reset(base_url)
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome["result"], (http.client.RemoteDisconnected, ConnectionError))
    assert outcome["elapsed"] < 5


def test_concurrent_requests_are_all_recorded(base_url):
    results = []

    def worker(index):
        results.append(post(base_url, body=dict(VALID, alert_id="c-%d" % index))[0])

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 20
    records = stand_in.requests(base_url, delivered=True)
    assert sorted(r["seq"] for r in records) == list(range(1, 21))
    assert sorted(r["json"]["alert_id"] for r in records) == sorted("c-%d" % index for index in range(20))


def test_bad_script_is_rejected(base_url):
    for item in ({"status": 99}, {"action": "fly"}, {"status": 500, "bdy": "x"}, {"status": 500, "repeat": 0},
                 {"action": "redirect"}, "500", {"action": "reset", "status": 200}, {"action": "truncate", "status": 99}):
        with pytest.raises(urllib.error.HTTPError) as info:
            stand_in.script(base_url, [item])
        assert info.value.code == 400
    assert stand_in.pending_script(base_url) == []


def test_key_masked_in_log_and_only_in_path(server, base_url):
    post(base_url, body=VALID)
    post(base_url, key=KEY + "?x=1", body=VALID)
    (record, _second) = stand_in.requests(base_url)
    without_path = dict(record, path=None, key=None)
    assert KEY not in json.dumps(without_path)
    deadline = time.monotonic() + 2
    text = ""
    while time.monotonic() < deadline:
        text = server["log"].read_text()
        if text.count("/api/integration/webhook/") >= 2:
            break
        time.sleep(0.02)
    assert KEY not in text
    assert "POST /api/integration/webhook/**** 200" in text
    assert "POST /api/integration/webhook/****?x=1 200" in text


def test_absolute_form_target_as_a_proxy_gets_it(server, base_url):
    # A client that uses the stand-in as its HTTP proxy sends the whole URL; the key stays out of the log.
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "http://temperstack.invalid:8080/api/integration/webhook/" + KEY, body=json.dumps(VALID).encode(),
                     headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    (record,) = stand_in.requests(base_url)
    assert record["key"] == KEY and record["delivered"] is True
    deadline = time.monotonic() + 2
    while "temperstack.invalid" not in server["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    text = server["log"].read_text()
    assert "POST http://temperstack.invalid:8080/api/integration/webhook/**** 200" in text
    assert KEY not in text


def test_timeline(base_url):
    post(base_url, body=VALID)
    post(base_url, body={"alert_name": "disk", "status": "OK"})
    post(base_url, raw=b"{}", content_type="text/plain")
    out = subprocess.run([sys.executable, SERVER, "timeline", "--url", base_url],
                         capture_output=True, text=True, timeout=10, check=True).stdout.splitlines()
    assert len(out) == 4
    assert out[0].split() == ["TIME", "CODE", "STATUS", "ALERT_ID", "ALERT_NAME"]
    assert out[1].split()[1:] == ["200", "Alarm", "a-1", "Multiple", "requests", "are", "failing."]
    assert out[2].split()[1:] == ["200", "OK", "-", "disk"]
    assert out[3].split()[1:] == ["400", "-", "-", "-"]
    assert len(out[1].split()[0]) == len("12:34:56.789")


def test_timeline_names_each_requests_integration_never_its_key(base_url):
    post(base_url, body=VALID)
    post(base_url, key=OTHER_KEY, body={"alert_name": "disk", "status": "OK"})
    post(base_url, key="not-named-key", body={"alert_name": "disk", "status": "OK"})
    env = dict(os.environ, TIMELINE_NAMES=f"{KEY}=web-tier,{OTHER_KEY}=databases")
    out = subprocess.run([sys.executable, SERVER, "timeline", "--url", base_url, "--integrations-env", "TIMELINE_NAMES"],
                         capture_output=True, text=True, timeout=10, check=True, env=env).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "CODE", "INTEGRATION", "STATUS", "ALERT_ID", "ALERT_NAME"]
    assert [line.split()[2] for line in lines[1:]] == ["web-tier", "databases", "(unknown)"]
    assert KEY not in out and OTHER_KEY not in out and "not-named-key" not in out


def test_serve_wait_and_sigterm(tmp_path):
    port_file = tmp_path / "port"
    with subprocess.Popen([sys.executable, SERVER, "serve", "--port", "0", "--port-file", str(port_file)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        try:
            waited = subprocess.run([sys.executable, SERVER, "wait", "--port-file", str(port_file), "--timeout", "10"],
                                    capture_output=True, text=True, timeout=15, check=False)
            assert waited.returncode == 0
            url = waited.stdout.strip()
            assert url == "http://127.0.0.1:%s" % port_file.read_text().strip()
            assert stand_in.health(url)
        finally:
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stdout == b"" and stderr == b""
    assert not port_file.exists()


def test_wait_times_out(tmp_path):
    started = time.monotonic()
    waited = subprocess.run([sys.executable, SERVER, "wait", "--port-file", str(tmp_path / "missing"), "--timeout", "0.3"],
                            capture_output=True, text=True, timeout=10, check=False)
    assert waited.returncode == 1 and waited.stdout == ""
    assert time.monotonic() - started < 5
