# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fault-injection, fuzzing and secret-leak suite (issue 6): shared machinery (fixtures are in conftest.py).

Run by `make faults-quick` (part of `make test`) and `make faults` (the long variant, which also writes
docs/reliability.md), from a copy of the collection that lies in an .../ansible_collections/temperstack/alerting
directory, so that ansible-playbook and the imports below find the collection under test.

The profile (TEMPERSTACK_FAULTS_PROFILE=quick or full) decides how many trials, cases and alerts each test
runs; every test reports its figures to ``figures``, which are written as JSON to TEMPERSTACK_FAULTS_REPORT
at the end of the session (tools/reliability_report.py turns them into docs/reliability.md).

Every ansible-playbook run goes through ``Harness.playbook``: -vvvv, a private HOME, ANSIBLE_LOCAL_TEMP,
ANSIBLE_REMOTE_TEMP and TMPDIR inside the session's work directory, and the one distinctive integration key
(``SECRET_KEY``), so that test_zz_leak_scan.py can scan everything the suite made for it.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import os
import platform
import secrets
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import typing as t

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(os.path.dirname(HERE))
COLLECTIONS_PATH = os.environ.get('TEMPERSTACK_FAULTS_COLLECTIONS_PATH') or os.path.dirname(
    os.path.dirname(os.path.dirname(COLLECTION_ROOT))
)
if not os.path.isdir(os.path.join(COLLECTIONS_PATH, 'ansible_collections', 'temperstack', 'alerting')):
    raise RuntimeError(
        f'{COLLECTION_ROOT} is not inside .../ansible_collections/temperstack/alerting: run the suite from a staged '
        'copy (make faults-quick) or set TEMPERSTACK_FAULTS_COLLECTIONS_PATH'
    )

# The collection is imported as ansible-playbook imports it, through ansible's collection loader.
from ansible.plugins.loader import init_plugin_loader  # noqa: E402 pylint: disable=wrong-import-position

init_plugin_loader([COLLECTIONS_PATH])

PROFILE = os.environ.get('TEMPERSTACK_FAULTS_PROFILE', 'quick')
if PROFILE not in ('quick', 'full'):
    raise RuntimeError(f'TEMPERSTACK_FAULTS_PROFILE must be quick or full, got {PROFILE!r}')
FULL = PROFILE == 'full'

# The one integration key of the whole session: distinctive enough that finding it anywhere means it leaked.
SECRET_KEY = 'TSK-LEAK-' + secrets.token_hex(12)
STAND_IN_DIR = os.path.join(COLLECTION_ROOT, 'tests', 'stand_in')
CALLBACK = 'temperstack.alerting.playbook_alerts'


def _load(name: str, path: str) -> t.Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stand_in_client = _load('temperstack_faults_stand_in_client', os.path.join(STAND_IN_DIR, 'client.py'))
stand_in_server = _load('temperstack_faults_stand_in_server', os.path.join(STAND_IN_DIR, 'temperstack_stand_in.py'))


def contract_violations(content_type: str | None, body: bytes) -> list[str]:
    """What the stand-in would answer 400 (or 413) for: the seed's contract, enforced as the stand-in does."""
    errors = list(stand_in_server.validate_webhook(content_type, body))
    if len(body) > stand_in_server.MAX_BODY:
        errors.append(f'body of {len(body)} bytes is over the stand-in limit of {stand_in_server.MAX_BODY}')
    return errors


def pick(quick: t.Any, full: t.Any) -> t.Any:
    return full if FULL else quick


# -- figures ------------------------------------------------------------------------------------------------


class Figures:
    """What the suite measured, by section; written as JSON when the session ends."""

    def __init__(self) -> None:
        self.sections: dict[str, t.Any] = {}
        self._lock = threading.Lock()

    def set(self, section: str, key: str, value: t.Any) -> None:
        with self._lock:
            self.sections.setdefault(section, {})[key] = value

    def add(self, section: str, key: str, value: t.Any) -> None:
        with self._lock:
            self.sections.setdefault(section, {}).setdefault(key, []).append(value)

    def write(self, path: str, outcome: dict[str, t.Any]) -> None:
        data = {'machine': machine_facts(), 'profile': PROFILE, 'outcome': outcome, 'sections': self.sections}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write('\n')


FIGURES = Figures()


def machine_facts() -> dict[str, t.Any]:
    from ansible.release import __version__ as ansible_version  # pylint: disable=import-outside-toplevel

    cpu = ''
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo', encoding='utf-8') as handle:
            cpu = next((line.split(':', 1)[1].strip() for line in handle if line.startswith('model name')), '')
    memory = ''
    with contextlib.suppress(OSError):
        with open('/proc/meminfo', encoding='utf-8') as handle:
            kib = int(handle.readline().split()[1])
            memory = f'{kib / 1024 / 1024:.1f} GiB'
    import hypothesis  # pylint: disable=import-outside-toplevel

    return {
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'os': f'{platform.system()} {platform.release()}',
        'cpu': cpu or platform.processor(),
        'cores': os.cpu_count(),
        'memory': memory,
        'python': platform.python_version(),
        'ansible_core': ansible_version,
        'sqlite': sqlite3.sqlite_version,
        'openssl': ssl.OPENSSL_VERSION,
        'hypothesis': hypothesis.__version__,
        'revision': os.environ.get('TEMPERSTACK_FAULTS_REVISION', ''),
    }


# -- stand-ins ------------------------------------------------------------------------------------------------


class StandIn:
    """A running stand-in: its base URL, control calls, and (for the leak scan) every record it ever made."""

    def __init__(self, url: str) -> None:
        self.url = url

    def webhook(self, key: str = SECRET_KEY) -> str:
        return stand_in_client.webhook_url(self.url, key)

    def requests(self, delivered: bool | None = None) -> list[dict[str, t.Any]]:
        records = stand_in_client.requests(self.url, delivered)
        RECORDS.extend(records)
        return records

    def reset(self) -> None:
        self.requests()  # kept for the leak scan
        stand_in_client.reset(self.url)

    def script(self, responses: list[dict[str, t.Any]]) -> None:
        stand_in_client.script(self.url, responses)

    def latency(self, seconds: float) -> None:
        stand_in_client.set_latency(self.url, seconds)

    def stats(self) -> dict[str, t.Any]:
        return stand_in_client.stats(self.url)

    def delivered(self) -> list[tuple[str, str]]:
        """(status, alert_id) of every request answered 200, in the order they arrived."""
        return [(r['json']['status'], r['json']['alert_id']) for r in self.requests(delivered=True)]


# Every record of every stand-in, fetched before the stand-in stops: test_zz_leak_scan.py checks where the key is.
RECORDS: list[dict[str, t.Any]] = []


@contextlib.contextmanager
def stand_in(directory: str, **kwargs: t.Any) -> t.Iterator[StandIn]:
    os.makedirs(directory, exist_ok=True)
    kwargs.setdefault('log', os.path.join(directory, 'requests.log'))
    with stand_in_client.start_stand_in(directory, **kwargs) as url:
        server = StandIn(url)
        try:
            yield server
        finally:
            with contextlib.suppress(OSError, ValueError):
                server.requests()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


# -- ansible-playbook -----------------------------------------------------------------------------------------


class Run(t.NamedTuple):
    rc: int
    stdout: str
    stderr: str
    seconds: float
    command: list[str]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


INVENTORY = """\
localhost ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"
"""


class Harness:
    """Runs ansible-playbook the way a user would, with everything it writes inside the work directory."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.runs = 0
        self.home = os.path.join(work_dir, 'home')
        self.tmp = os.path.join(work_dir, 'tmp')
        self.outputs = os.path.join(work_dir, 'outputs')
        for path in (self.home, self.tmp, self.outputs):
            os.makedirs(path, exist_ok=True)
        self.inventory = os.path.join(work_dir, 'inventory.ini')
        with open(self.inventory, 'w', encoding='utf-8') as handle:
            handle.write(INVENTORY)
        self._lock = threading.Lock()

    def environment(self, extra: t.Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            name: value for name, value in os.environ.items()
            if not name.startswith(('TEMPERSTACK_', 'ANSIBLE_')) and name not in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY')
        }
        env.update({
            'HOME': self.home,
            'TMPDIR': self.tmp,
            'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS_PATH,
            'ANSIBLE_LOCAL_TEMP': os.path.join(self.tmp, 'ansible-local'),
            'ANSIBLE_REMOTE_TEMP': os.path.join(self.tmp, 'ansible-remote'),
            'ANSIBLE_HOME': os.path.join(self.home, '.ansible'),
            # Module files stay on disk, so the leak scan sees them too.
            'ANSIBLE_KEEP_REMOTE_FILES': '1',
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_FORCE_COLOR': '0',
            'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.default',
            'ANSIBLE_RETRY_FILES_ENABLED': '0',
            'ANSIBLE_HOST_KEY_CHECKING': '0',
            'ANSIBLE_INVENTORY_UNPARSED_WARNING': '0',
            'ANSIBLE_LOCALHOST_WARNING': '0',
            'no_proxy': '127.0.0.1,localhost',
            'NO_PROXY': '127.0.0.1,localhost',
            'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
        })
        env.update(extra or {})
        return env

    def write(self, directory: str, name: str, text: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(text)
        return path

    def playbook(
        self,
        playbook: str | list[str],
        env: t.Mapping[str, str] | None = None,
        args: t.Sequence[str] = (),
        timeout: float = 600,
        inventory: str | None = None,
        umask: int | None = None,
        verbosity: str = '-vvvv',
    ) -> Run:
        """Run ansible-playbook to its end; output is kept in the work directory for the leak scan."""
        process, command, started, out_path, err_path = self.start(playbook, env, args, inventory, umask, verbosity)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return self.finish(process, command, started, out_path, err_path)

    def start(self, playbook, env=None, args=(), inventory=None, umask=None, verbosity='-vvvv'):
        playbooks = [playbook] if isinstance(playbook, str) else list(playbook)
        with self._lock:
            self.runs += 1
            number = self.runs
        out_path = os.path.join(self.outputs, f'run-{number:05d}.stdout')
        err_path = os.path.join(self.outputs, f'run-{number:05d}.stderr')
        command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory or self.inventory]
        if verbosity:
            command.append(verbosity)
        command += list(args) + playbooks

        def preexec() -> None:
            if umask is not None:
                os.umask(umask)

        with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
            started = time.monotonic()
            process = subprocess.Popen(  # pylint: disable=consider-using-with
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self.environment(env),
                cwd=self.work_dir, preexec_fn=preexec if umask is not None else None,
            )
        return process, command, started, out_path, err_path

    @staticmethod
    def finish(process, command, started, out_path, err_path) -> Run:
        seconds = time.monotonic() - started
        with open(out_path, encoding='utf-8', errors='replace') as out, open(err_path, encoding='utf-8', errors='replace') as err:
            return Run(process.returncode, out.read(), err.read(), seconds, command)


def callback_env(url: str, ledger: str, **settings: t.Any) -> dict[str, str]:
    """The environment that enables the callback and points it at ``url`` (the base URL) with the secret key."""
    env = {
        'ANSIBLE_CALLBACKS_ENABLED': CALLBACK,
        'TEMPERSTACK_BASE_URL': url,
        'TEMPERSTACK_API_KEY': SECRET_KEY,
        'TEMPERSTACK_LEDGER_PATH': ledger,
        'TEMPERSTACK_TIMEOUT': '2',
        'TEMPERSTACK_RETRIES': '1',
        'TEMPERSTACK_FLUSH_TIMEOUT': '10',
    }
    env.update({f'TEMPERSTACK_{name.upper()}': str(value) for name, value in settings.items()})
    return env


FAIL_PLAYBOOK = """\
- name: Deploy web tier
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Release
      ansible.builtin.fail:
        msg: the release failed
      when: fail_release | default(true) | bool
    - name: Done
      ansible.builtin.debug:
        msg: done
"""


def ledger_rows(path: str) -> dict[str, list[tuple]]:
    """The ledger's tables, read as any SQLite client would (raises if the file cannot be read)."""
    connection = sqlite3.connect(f'file:{path}?mode=ro', uri=True, timeout=30)
    try:
        integrity = connection.execute('PRAGMA integrity_check').fetchone()[0]
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # A run killed while it created the ledger leaves a file without tables; the next run creates them.
        return {
            'integrity': [(integrity,)],
            'tables': sorted(tables),
            'alerts': connection.execute('SELECT alert_id, status FROM alerts ORDER BY alert_id').fetchall()
            if 'alerts' in tables else [],
            'outbox': connection.execute('SELECT seq, alert_id, status FROM outbox ORDER BY seq').fetchall()
            if 'outbox' in tables else [],
        }
    finally:
        connection.close()


def assert_clean(run: Run) -> None:
    """No traceback and no failed callback dispatch: what a user must never see."""
    for marker in ('Traceback (most recent call last)', 'Callback dispatch', 'database is locked', 'Unexpected failure'):
        assert marker not in run.output, f'{marker!r} in the output of {" ".join(run.command)}'


# -- endpoints that fail below HTTP ---------------------------------------------------------------------------


class SilentServer:
    """Accepts TCP connections and never says a word: a TLS handshake (or an HTTP answer) that never comes."""

    def __init__(self, port: int = 0) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(('127.0.0.1', port))
        self._socket.listen(64)
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _address = self._socket.accept()
            except OSError:
                continue
            self.accepted += 1
            self._held.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self._held:
            with contextlib.suppress(OSError):
                connection.close()
        self._socket.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        self.close()


class Certificates(t.NamedTuple):
    ca: str            # the CA bundle the client is told to trust (ca_path)
    valid: tuple[str, str]      # certificate and key the trusted CA issued for 127.0.0.1
    expired: tuple[str, str]    # the same CA, but expired yesterday
    untrusted: tuple[str, str]  # issued for 127.0.0.1 by a CA nobody trusts


def make_certificates(directory: str) -> Certificates:
    import trustme  # pylint: disable=import-outside-toplevel

    os.makedirs(directory, exist_ok=True)
    trusted, stranger = trustme.CA(), trustme.CA()
    now = datetime.datetime.now(datetime.timezone.utc)

    def write(name: str, leaf: t.Any) -> tuple[str, str]:
        cert, key = os.path.join(directory, f'{name}.pem'), os.path.join(directory, f'{name}.key')
        leaf.private_key_pem.write_to_path(key)
        leaf.cert_chain_pems[0].write_to_path(cert)
        return cert, key

    ca = os.path.join(directory, 'ca.pem')
    trusted.cert_pem.write_to_path(ca)
    return Certificates(
        ca,
        write('valid', trusted.issue_cert('127.0.0.1', 'localhost')),
        write('expired', trusted.issue_cert('127.0.0.1', 'localhost', not_before=now - datetime.timedelta(days=30),
                                            not_after=now - datetime.timedelta(days=1))),
        write('untrusted', stranger.issue_cert('127.0.0.1', 'localhost')),
    )


def first_json(text: str, marker: str) -> dict[str, t.Any] | None:
    """The JSON object printed after the first ``marker`` in ``text`` (Ansible's ``=> {...}`` results)."""
    index = text.find(marker)
    if index < 0:
        return None
    start = text.find('{', index + len(marker))
    try:
        value, _end = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
