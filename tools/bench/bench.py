# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks of temperstack.alerting, each case interleaved with its baseline: `make bench`.

Usage (with the Python of .venv, which has ansible-core; `make bench` and `make bench-smoke` do this):

    python tools/bench/bench.py [--output docs/performance.md] [--work build/bench] [--cases 1,4,7] [--strict]
    python tools/bench/bench.py --smoke [--work build/bench-smoke]

The full run measures the seven cases of issue 5 and the four of issue 11 (the PostgreSQL ledger: cases 8-11) and
writes docs/performance.md: the table (every figure a ratio or a bound measured in this run, with its median, spread
and 95% confidence interval), the machine, the versions and how to reproduce it. --smoke runs one scaled-down
iteration of each case (about a minute), asserts no target (only case 11's exactly-once delivery, which is
correctness), and writes its report into the work directory; `make test` runs it so that the harness cannot rot.
--strict makes a missed or undecided target an exit status of 1.

Nothing here touches ~/.ansible: the collection is staged into the work directory (tools/stage_collection.sh),
ANSIBLE_HOME, the temporary directories and every ledger live there, and the Temperstack stand-in
(tests/stand_in/) runs on 127.0.0.1 for the duration of the run. The PostgreSQL cases start a server of their own
in WORK/pg (tools/pg_server.sh) and stop it at the end, also when the run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import typing as t
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
HERE = os.path.join(REPO, 'tools', 'bench')
STAND_IN = os.path.join(REPO, 'tests', 'stand_in', 'temperstack_stand_in.py')
TIMING_PLUGINS = os.path.join(HERE, 'callback_plugins')
LEDGER_BENCH = os.path.join(HERE, 'ledger_bench.py')
PG_SERVER = os.path.join(REPO, 'tools', 'pg_server.sh')
NOTES = os.path.join(HERE, 'notes.md')
CALLBACK = 'temperstack.alerting.playbook_alerts'
COLLECTION_SUBDIR = os.path.join('ansible_collections', 'temperstack', 'alerting')


class Scale(t.NamedTuple):
    loop_items: int = 100
    loop_rounds: int = 16
    uri_rounds: int = 4
    green_hosts: int = 100
    green_tasks: int = 10
    green_min_pairs: int = 16
    green_max_pairs: int = 60
    fixed_pairs: int = 20
    storm_hosts: int = 500
    storm_pairs: int = 5
    # Three retries: the bound counts the longest backoff, and the more retries, the less likely their random
    # jitter all lands next to its maximum (which would leave no room for the few milliseconds of overhead).
    dead_timeout: int = 1
    dead_retries: int = 3
    dead_flush: float = 5.0
    dead_pairs: int = 3
    ledger_records: int = 100_000
    ledger_samples: int = 2000
    writers: int = 12
    writer_distinct: int = 200
    writer_increments: int = 25
    writer_queued: int = 20
    # Issue 11, the PostgreSQL ledger (cases 8-11; cases 9 and 10 use loop_items and the green_* settings too).
    pg_decision_blocks: int = 40
    pg_decision_block: int = 100
    pg_loop_rounds: int = 16
    fleet_controllers: int = 3
    fleet_forks: int = 20
    fleet_alerts: int = 500
    fleet_runs: int = 2
    # When the controllers' alert tasks start, after the controllers are started: time for the slowest start-up.
    fleet_start_delay: float = 8.0
    # Issue 18, the EDA event source (case 12): rounds of events POSTed by concurrent clients on loopback.
    eda_rounds: int = 5
    eda_events: int = 2000
    eda_clients: int = 16


FULL = Scale()
SMOKE = Scale(
    loop_items=5, loop_rounds=1, uri_rounds=1, green_hosts=5, green_tasks=2, green_min_pairs=1, green_max_pairs=1, fixed_pairs=1,
    storm_hosts=20, storm_pairs=1, dead_timeout=1, dead_retries=1, dead_flush=1.0, dead_pairs=1,
    ledger_records=2000, ledger_samples=100, writers=3, writer_distinct=20, writer_increments=5, writer_queued=5,
    pg_decision_blocks=2, pg_decision_block=20, pg_loop_rounds=1, fleet_controllers=3, fleet_forks=4, fleet_alerts=12,
    fleet_runs=1, fleet_start_delay=5.0, eda_rounds=1, eda_events=100, eda_clients=4,
)

GREEN_RATIO_LIMIT = 1.03


class BenchError(Exception):
    """The harness could not measure what it set out to measure."""


# -- statistics ------------------------------------------------------------------------------------


def median(values: t.Sequence[float]) -> float:
    return statistics.median(values)


def bootstrap_ci(values: t.Sequence[float], level: float = 0.95, resamples: int = 4000,
                 seed: int = 5) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the median (None for fewer than 3 values)."""
    if len(values) < 3:
        return None
    rng = random.Random(seed)
    count = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=count)) for _draw in range(resamples))
    tail = (1.0 - level) / 2.0
    return medians[int(tail * (resamples - 1))], medians[int((1.0 - tail) * (resamples - 1))]


class Figure:
    """One row of the table: a ratio or a bound, its values (one per pair or run) and its target.

    basis 'median': the target applies to the median, decided by its 95% bootstrap interval when there are
    at least 3 values; basis 'every': every value must meet it (bounds, counts).
    """

    def __init__(self, case: str, name: str, values: t.Sequence[float], unit: str, limit: float | None,
                 basis: str = 'median', shown: str | None = None, target: str | None = None, note: str = ''):
        self.case = case
        self.name = name
        self.values = list(values)
        self.unit = unit
        self.limit = limit
        self.basis = basis
        self.shown = shown
        self.target_text = target
        self.note = note
        self._ci: tuple[float, float] | None = None

    @property
    def value(self) -> float:
        return median(self.values) if self.basis == 'median' else max(self.values)

    @property
    def ci(self) -> tuple[float, float] | None:
        # Computed once: a figure of thousands of values (case 8) takes seconds to resample.
        if self.basis != 'median':
            return None
        if self._ci is None:
            self._ci = bootstrap_ci(self.values)
        return self._ci

    @property
    def verdict(self) -> str:
        if self.limit is None:
            return 'reported'
        if self.basis == 'every':
            return 'met' if all(value <= self.limit for value in self.values) else 'MISSED'
        interval = self.ci
        if interval is None:
            return 'met' if self.value <= self.limit else 'MISSED'
        if interval[1] <= self.limit:
            return 'met'
        if interval[0] > self.limit:
            return 'MISSED'
        return 'undecided'

    def fmt(self, value: float) -> str:
        if self.unit == 'x':
            return f'{value:.3f}'
        if self.unit == 'ms':
            return f'{value:.3f} ms'
        if self.unit == 's':
            return f'{value:.2f} s'
        if self.unit == 'MB':
            return f'{value:.1f} MB'
        if self.unit == '/s':
            return f'{value:.1f} /s'
        return f'{value:g}'

    def row(self) -> list[str]:
        interval = self.ci
        spread = f'{self.fmt(min(self.values))} – {self.fmt(max(self.values))}' if len(self.values) > 1 else '–'
        shown = self.shown or self.fmt(self.value)
        if self.basis == 'every' and len(self.values) > 1 and not self.shown:
            shown = f'{shown} (worst)'
        target = self.target_text or (f'≤ {self.fmt(self.limit)}' if self.limit is not None else '–')
        return [
            self.case, self.name, shown,
            f'{self.fmt(interval[0])} – {self.fmt(interval[1])}' if interval else '–',
            spread, str(len(self.values)), target, self.verdict,
        ]


# -- the process tree's memory ---------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            return handle.read()
    except OSError:
        return ''


def _status_kb(pid: int, field: str) -> int:
    for line in _read(f'/proc/{pid}/status').splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    for line in _read(f'/proc/{pid}/smaps_rollup').splitlines():
        if line.startswith('Pss:'):
            return int(line.split()[1])
    return 0


def _ppid(pid: int) -> int | None:
    text = _read(f'/proc/{pid}/stat')
    try:
        return int(text[text.rindex(')') + 2:].split()[1])
    except (ValueError, IndexError):
        return None


class TreeSampler(threading.Thread):
    """Samples the memory of a process and all its descendants every ``interval`` seconds.

    peak_pss_kb: the highest sum of PSS (proportional set size: a page shared by n processes counts 1/n in each)
    over the tree at one moment; forks share most of their parent's pages, so summing RSS would count those
    pages once per worker. main_hwm_kb: the main process's own peak RSS (VmHWM). helper_hwm_kb: the peak RSS
    of the callback's delivery process (a separate fork+exec'd Python), when there is one.
    """

    def __init__(self, root: int, interval: float = 0.02) -> None:
        super().__init__(name='tree-sampler', daemon=True)
        self.root = root
        self.interval = interval
        self.peak_pss_kb = 0
        self.main_hwm_kb = 0
        self.helper_hwm_kb = 0
        self.helper_pss_kb = 0
        self.samples = 0
        self._parents: dict[int, int | None] = {}
        self._stopped = threading.Event()

    def run(self) -> None:
        while True:
            self.sample()
            if self._stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join()

    def sample(self) -> None:
        alive = {int(name) for name in os.listdir('/proc') if name.isdigit()}
        for pid in list(self._parents):
            if pid not in alive:
                del self._parents[pid]
        for pid in alive - set(self._parents):
            self._parents[pid] = _ppid(pid)
        children: dict[int, list[int]] = {}
        for pid, parent in self._parents.items():
            if parent is not None:
                children.setdefault(parent, []).append(pid)
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        sizes = {pid: _pss_kb(pid) for pid in tree}
        pss = sum(sizes.values())
        if pss == 0:
            return
        self.samples += 1
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.main_hwm_kb = max(self.main_hwm_kb, _status_kb(self.root, 'VmHWM'))
        for pid in tree:
            if pid != self.root and '_outbox_sender' in _read(f'/proc/{pid}/cmdline'):
                self.helper_hwm_kb = max(self.helper_hwm_kb, _status_kb(pid, 'VmHWM'))
                self.helper_pss_kb = max(self.helper_pss_kb, sizes[pid])


# -- running things --------------------------------------------------------------------------------


class Run(t.NamedTuple):
    label: str
    rc: int
    wall: float
    cpu: float
    started: float
    ended: float
    timing: dict[str, t.Any]
    memory: dict[str, int]
    log: str

    @property
    def task_seconds(self) -> float:
        """From the start of the first task to the stats: what a one-task play spends in its task."""
        return self.timing['stats'] - self.timing['tasks'][0][1]

    @property
    def end_lag(self) -> float:
        """From the last host result to the end of the ansible-playbook process."""
        return self.ended - self.timing['last_result']


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Bench:
    """The shared set-up: work directory, staged collection, stand-in, environment, playbook runner."""

    def __init__(self, scale: Scale, work: str, smoke: bool, collections: str | None = None) -> None:
        self.scale = scale
        self.work = os.path.abspath(work)
        self.smoke = smoke
        self.python = sys.executable
        self.bin = os.path.dirname(self.python)
        self.given_collections = collections
        self.collections = os.path.abspath(collections) if collections else os.path.join(self.work, 'collections')
        self.stand_in: subprocess.Popen | None = None
        self.base_url = ''
        self._http = _no_proxy_opener()
        self._runs = 0
        self._runs_lock = threading.Lock()
        # The ansible-playbook processes running now, so that an interrupted run_together() can stop them all.
        self._live: set[subprocess.Popen] = set()
        self.loads: dict[str, str] = {}
        # The run's own PostgreSQL server (cases 8-11), started by the first case that needs it: its URLs, from
        # `tools/pg_server.sh env`. They hold passwords: never printed, never in the report.
        self.pg_dir = os.path.join(self.work, 'pg')
        self.pg: dict[str, str] | None = None
        self._pg_databases: set[str] = set()
        # What the report says about the server and the driver, noted while the server runs.
        self.pg_versions: list[tuple[str, str]] = []

    # -- set-up ----------------------------------------------------------------------------------

    def setup(self) -> None:
        if not os.path.exists(os.path.join(self.bin, 'ansible-playbook')):
            raise BenchError(f'no ansible-playbook next to {self.python}: run this with the Python of .venv (make venv)')
        if os.path.isdir(self.pg_dir):
            # A server an earlier, killed run left behind would lose its data directory under its feet.
            self._stop_postgres()
        if os.path.isdir(self.work):
            shutil.rmtree(self.work)
        for sub in ('logs', 'playbooks', 'ledgers', 'tmp', 'ansible-home'):
            os.makedirs(os.path.join(self.work, sub))
        with open(os.path.join(self.work, 'ansible.cfg'), 'w', encoding='utf-8') as handle:
            handle.write('# empty on purpose: no ansible.cfg of the caller takes part in the benchmark\n[defaults]\n')
        if self.given_collections:
            if not os.path.isfile(os.path.join(self.collections, COLLECTION_SUBDIR, 'galaxy.yml')):
                raise BenchError(f'{self.collections} holds no {COLLECTION_SUBDIR}')
        else:
            subprocess.run(
                [os.path.join(REPO, 'tools', 'stage_collection.sh'), os.path.join(self.collections, COLLECTION_SUBDIR)],
                check=True, stdout=subprocess.DEVNULL,
            )
        self._start_stand_in()

    def _start_stand_in(self) -> None:
        port_file = os.path.join(self.work, 'stand-in.port')
        with open(os.path.join(self.work, 'logs', 'stand-in.out'), 'wb') as out:
            self.stand_in = subprocess.Popen(  # pylint: disable=consider-using-with
                [self.python, STAND_IN, 'serve', '--port', '0', '--port-file', port_file],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        waited = subprocess.run(
            [self.python, STAND_IN, 'wait', '--port-file', port_file, '--timeout', '20'],
            check=False, capture_output=True, text=True,
        )
        if waited.returncode != 0:
            raise BenchError(f'the stand-in did not start: {waited.stderr.strip()}')
        self.base_url = waited.stdout.strip()

    def close(self) -> None:
        if self.stand_in is not None and self.stand_in.poll() is None:
            self.stand_in.terminate()
            try:
                self.stand_in.wait(10)
            except subprocess.TimeoutExpired:
                self.stand_in.kill()
                self.stand_in.wait()
        if self.pg is not None or os.path.isdir(self.pg_dir):
            self._stop_postgres()

    # -- the PostgreSQL server (cases 8-11) ----------------------------------------------------------

    def postgres(self, database: str) -> str:
        """The URL of ``database`` (made empty on first use) on this run's PostgreSQL server, started on first use.

        The role is the database's owner, which may create the ledger's schema, as a controller's first run does.
        """
        if self.pg is None:
            self._start_postgres()
        psycopg = _psycopg()
        if database not in self._pg_databases:
            with psycopg.connect(self.pg['TEMPERSTACK_TEST_PG_ADMIN_URL'], autocommit=True, connect_timeout=10) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
                admin.execute(f'CREATE DATABASE "{database}" OWNER temperstack')
            self._pg_databases.add(database)
        return _with_database(self.pg['TEMPERSTACK_TEST_PG_URL'], database)

    def pg_query(self, database: str, sql: str, params: t.Sequence[t.Any] = ()) -> list[tuple[t.Any, ...]]:
        """Rows of ``sql`` on ``database``, as the server's superuser: for the harness's own checks only."""
        psycopg = _psycopg()
        url = _with_database(t.cast(dict, self.pg)['TEMPERSTACK_TEST_PG_ADMIN_URL'], database)
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise BenchError(f'the check of the PostgreSQL ledger {database} failed: {type(exc).__name__}: '
                             f'{str(exc).strip().splitlines()[0] if str(exc).strip() else ""}') from None

    def pg_settings(self, settings: dict[str, str | None]) -> None:
        """Change server settings with ALTER SYSTEM (None: back to the configuration file's) and reload them."""
        psycopg = _psycopg()
        with psycopg.connect(t.cast(dict, self.pg)['TEMPERSTACK_TEST_PG_ADMIN_URL'], autocommit=True, connect_timeout=10) as admin:
            for name, value in settings.items():
                if value is None:
                    admin.execute(f'ALTER SYSTEM RESET {name}')
                else:
                    admin.execute(f'ALTER SYSTEM SET {name} = {value}')
            admin.execute('SELECT pg_reload_conf()')
        # pg_reload_conf() only signals the server; its processes read the new settings at their next command.
        time.sleep(0.5)

    def _start_postgres(self) -> None:
        _psycopg()
        os.makedirs(self.pg_dir, exist_ok=True)
        # The server runs as its own user (tools/pg_server.sh), which must be able to enter the work directory.
        for path in (self.work, self.pg_dir):
            os.chmod(path, os.stat(path).st_mode | 0o011)
        with open(os.path.join(self.work, 'logs', 'pg_server.out'), 'ab') as out:
            started = subprocess.run([PG_SERVER, 'start', self.pg_dir], check=False, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT)
        if started.returncode != 0:
            raise BenchError('tools/pg_server.sh could not start a PostgreSQL server; its output: '
                             + ' / '.join(_read(os.path.join(self.work, 'logs', 'pg_server.out')).splitlines()[-8:]))
        printed = subprocess.run([PG_SERVER, 'env', self.pg_dir], check=False, capture_output=True, text=True)
        if printed.returncode != 0:
            raise BenchError(f'tools/pg_server.sh env failed: {printed.stderr.strip()}')
        found = {}
        for line in printed.stdout.splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == 'export' and '=' in words[1]:
                name, _sep, value = words[1].partition('=')
                found[name] = value
        if 'TEMPERSTACK_TEST_PG_URL' not in found or 'TEMPERSTACK_TEST_PG_ADMIN_URL' not in found:
            raise BenchError('tools/pg_server.sh env printed no URLs')
        self.pg = found
        psycopg = _psycopg()
        settings = ', '.join(f'{name} {row[0]}' for name in ('fsync', 'synchronous_commit', 'full_page_writes')
                             for row in self.pg_query('postgres', f'SHOW {name}'))
        self.pg_versions = [
            ('PostgreSQL (cases 8–11)', f'{self.pg_query("postgres", "SHOW server_version")[0][0]} on 127.0.0.1, started '
             f'by tools/pg_server.sh ({settings})'),
            ('psycopg', f'{psycopg.__version__} ({psycopg.pq.__impl__} implementation, libpq {psycopg.pq.version()})'),
        ]

    def _stop_postgres(self) -> None:
        self.pg = None
        with open(os.path.join(self.work, 'logs', 'pg_server.out'), 'ab') if os.path.isdir(os.path.join(self.work, 'logs')) \
                else open(os.devnull, 'wb') as out:
            stopped = subprocess.run([PG_SERVER, 'stop', self.pg_dir], check=False, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT)
        if stopped.returncode != 0:
            print(f'bench: tools/pg_server.sh stop {self.pg_dir} failed (exit {stopped.returncode}): stop it by hand',
                  file=sys.stderr)

    # -- the stand-in --------------------------------------------------------------------------------

    def webhook(self, key: str) -> str:
        return f'{self.base_url}/api/integration/webhook/{key}'

    def control(self, path: str, payload: t.Any = None) -> t.Any:
        data = None if payload is None else json.dumps(payload).encode('utf-8')
        request = urllib.request.Request(self.base_url + '/_stand_in/' + path, data=data,
                                         headers={'Content-Type': 'application/json'},
                                         method='GET' if data is None else 'POST')
        with self._http.open(request, timeout=30) as response:
            return json.loads(response.read().decode('utf-8'))

    def reset(self) -> None:
        self.control('reset', {})

    def requests(self) -> list[dict[str, t.Any]]:
        return self.control('requests')

    def stand_in_cpu(self) -> float:
        """CPU seconds (user + system) the stand-in has used so far, its finished threads included."""
        fields = _read(f'/proc/{self.stand_in.pid}/stat').rsplit(')', 1)[-1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def hang_everything(self) -> None:
        self.control('script', {'responses': [{'action': 'hang', 'seconds': 600, 'repeat': 100000}]})

    # -- files -------------------------------------------------------------------------------------

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.work, 'playbooks', name)
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(text)
        return path

    def inventory(self, name: str, hosts: int | None) -> str:
        """``hosts`` local hosts h0001... (None: just localhost), all with the venv's Python."""
        names = ['localhost'] if hosts is None else [f'h{number:04d}' for number in range(1, hosts + 1)]
        return self.write(name, '[bench]\n' + '\n'.join(names) + '\n\n[bench:vars]\nansible_connection=local\n'
                          f'ansible_python_interpreter={self.python}\n')

    def ledger(self, name: str) -> str:
        return os.path.join(self.work, 'ledgers', name, 'ledger.sqlite3')

    # -- environment and runs --------------------------------------------------------------------

    def env(self, callback: bool = False, timing: bool = True, **extra: str) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(('ANSIBLE_', 'TEMPERSTACK_')) and name != 'PYTHONDONTWRITEBYTECODE'}
        enabled = (['bench_timing'] if timing else []) + ([CALLBACK] if callback else [])
        env.update({
            'PATH': self.bin + os.pathsep + env.get('PATH', ''),
            'ANSIBLE_CONFIG': os.path.join(self.work, 'ansible.cfg'),
            'ANSIBLE_HOME': os.path.join(self.work, 'ansible-home'),
            'ANSIBLE_LOCAL_TEMP': os.path.join(self.work, 'tmp'),
            'ANSIBLE_REMOTE_TEMP': os.path.join(self.work, 'tmp'),
            'ANSIBLE_COLLECTIONS_PATH': self.collections,
            'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
            'ANSIBLE_CALLBACK_PLUGINS': TIMING_PLUGINS,
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_RETRY_FILES_ENABLED': 'false',
            'ANSIBLE_FORKS': '5',
            'no_proxy': '127.0.0.1,localhost',
            'NO_PROXY': '127.0.0.1,localhost',
        })
        if enabled:  # an empty ANSIBLE_CALLBACKS_ENABLED makes ansible-core 2.21 fail
            env['ANSIBLE_CALLBACKS_ENABLED'] = ','.join(enabled)
        env.update(extra)
        return env

    def run(self, label: str, playbook: str, inventory: str, env: dict[str, str], expect: t.Sequence[int] = (0,),
            memory: bool = False, args: t.Sequence[str] = ()) -> Run:
        with self._runs_lock:
            self._runs += 1
            stem = os.path.join(self.work, 'logs', f'{self._runs:04d}-{label}')
        timing_file = stem + '.timing.json'
        env = dict(env, BENCH_TIMING_FILE=timing_file)
        with open(stem + '.log', 'wb') as log:
            started = time.time()
            clock = time.perf_counter()
            process = subprocess.Popen(  # pylint: disable=consider-using-with
                [os.path.join(self.bin, 'ansible-playbook'), '-i', inventory, *args, playbook],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.work,
            )
            self._live.add(process)
            sampler = TreeSampler(process.pid) if memory else None
            if sampler is not None:
                sampler.start()
            try:
                _pid, status, usage = os.wait4(process.pid, 0)
            except BaseException:  # interrupted: leave no ansible-playbook behind
                process.terminate()
                process.wait()
                raise
            finally:
                self._live.discard(process)
                if sampler is not None:
                    sampler.stop()
            wall = time.perf_counter() - clock
            ended = time.time()
            process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode not in expect:
            raise BenchError(f'{label}: ansible-playbook exited with {process.returncode} (expected {list(expect)}); '
                             f'last lines of {stem}.log:\n' + '\n'.join(_read(stem + '.log').splitlines()[-15:]))
        timing = json.loads(_read(timing_file) or '{}')
        mem = {}
        if sampler is not None:
            mem = {'peak_pss_kb': sampler.peak_pss_kb, 'main_hwm_kb': sampler.main_hwm_kb,
                   'helper_hwm_kb': sampler.helper_hwm_kb, 'helper_pss_kb': sampler.helper_pss_kb,
                   'samples': sampler.samples}
        return Run(label, process.returncode, wall, usage.ru_utime + usage.ru_stime, started, ended, timing, mem,
                   stem + '.log')

    def run_together(self, runs: t.Sequence[dict[str, t.Any]]) -> list[Run]:
        """Several ansible-playbook runs started at the same moment (each a dict of run()'s arguments), all awaited.

        Each is waited for in a thread of its own. Interrupted (Ctrl-C, SIGTERM), every run still going is stopped.
        """
        results: list[Run | None] = [None] * len(runs)
        errors: list[BaseException] = []

        def one(index: int) -> None:
            try:
                results[index] = self.run(**runs[index])
            except BaseException as exc:  # pylint: disable=broad-exception-caught
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(index,), daemon=True) for index in range(len(runs))]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except BaseException:
            for process in list(self._live):
                process.terminate()
            for thread in threads:
                thread.join(30)
            raise
        if errors:
            raise errors[0]
        return t.cast(list[Run], results)


def _psycopg() -> t.Any:
    try:
        import psycopg  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise BenchError(f'the PostgreSQL cases need psycopg in {sys.executable} ({exc}): make venv, or pip install '
                         '"psycopg[binary]"') from None
    return psycopg


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path='/' + database))


def loadavg() -> str:
    return ' '.join(_read('/proc/loadavg').split()[:3])


def play(name: str, hosts: str, tasks: str) -> str:
    return f'- name: {name}\n  hosts: {hosts}\n  gather_facts: false\n  tasks:\n{tasks}'


# -- the cases -------------------------------------------------------------------------------------


def case_loops(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Cases 1-3: a 100-item loop through the module (first sends, then a repeat), uri and debug."""
    scale = bench.scale
    items = scale.loop_items
    inventory = bench.inventory('local.ini', None)
    loop = f'      loop: "{{{{ range({items}) | list }}}}"\n'
    url = bench.webhook('bench-loop')
    playbooks = {
        'module': bench.write('loop-module.yml', play('loop', 'bench', (
            '    - name: alerts\n      temperstack.alerting.alert:\n'
            '        alert_name: "bench {{ bench_round }} alert {{ item }}"\n        status: Alarm\n' + loop))),
        'uri': bench.write('loop-uri.yml', play('loop', 'bench', (
            f'    - name: alerts\n      ansible.builtin.uri:\n        url: "{url}"\n        method: POST\n'
            '        body_format: json\n        body:\n          alert_name: "bench {{ bench_round }} alert {{ item }}"\n'
            '          status: Alarm\n' + loop))),
        'debug': bench.write('loop-debug.yml', play('loop', 'bench', (
            '    - name: alerts\n      ansible.builtin.debug:\n        msg: "bench {{ bench_round }} alert {{ item }}"\n' + loop))),
    }
    times: dict[str, list[float]] = {'first': [], 'repeat': [], 'uri': [], 'debug': []}
    walls: dict[str, list[float]] = {'first': [], 'repeat': [], 'uri': [], 'debug': []}
    cpus: dict[str, list[float]] = {'first': [], 'repeat': [], 'uri': [], 'debug': []}
    with_uri: list[dict[str, float]] = []
    stand_in_cpu: list[float] = []
    for number in range(scale.loop_rounds):
        # debug and the module swap places every round; uri (slow, and far from its target) only in the first
        # rounds, first or last in turn.
        order = ['debug', 'module'] if number % 2 == 0 else ['module', 'debug']
        if number < scale.uri_rounds:
            order = order + ['uri'] if number % 2 == 0 else ['uri'] + order
        # One ledger for all rounds, as on a real controller; each round's alerts are new to it.
        env = bench.env(TEMPERSTACK_WEBHOOK_URL=url, TEMPERSTACK_LEDGER_PATH=bench.ledger('loop'))
        extra = ['-e', f'bench_round={number}']
        measured = {}
        for arm in order:
            bench.reset()
            if arm == 'module':
                cpu = bench.stand_in_cpu()
                first = bench.run('loop-module-first', playbooks['module'], inventory, env, args=extra)
                stand_in_cpu.append(bench.stand_in_cpu() - cpu)
                _expect_delivered(bench, items, 'module, first sends')
                bench.reset()
                repeat = bench.run('loop-module-repeat', playbooks['module'], inventory, env, args=extra)
                _expect_delivered(bench, 0, 'module, repeat run')
                runs = {'first': first, 'repeat': repeat}
            else:
                runs = {arm: bench.run(f'loop-{arm}', playbooks[arm], inventory, env, args=extra)}
                if arm == 'uri':
                    _expect_delivered(bench, items, 'uri')
            for name, run in runs.items():
                times[name].append(run.task_seconds)
                walls[name].append(run.wall)
                cpus[name].append(run.cpu)
                measured[name] = run.task_seconds
        if 'uri' in measured:
            with_uri.append(measured)
        print(f'  round {number + 1}/{scale.loop_rounds}: ' + ', '.join(
            f'{name} {value:.3f} s' for name, value in measured.items()), flush=True)

    def ratios(top: str, bottom: str) -> list[float]:
        if bottom == 'uri':
            return [entry[top] / entry['uri'] for entry in with_uri]
        return [a / b for a, b in zip(times[top], times[bottom])]

    note = (f'{items}-item loop, task time; one ratio per round: {scale.loop_rounds} rounds against debug (which '
            f'swaps places with the module every round), the first {scale.uri_rounds} of them with uri too')
    if with_uri:
        figures.append(Figure('1', 'First sends: alert module ÷ ansible.builtin.uri', ratios('first', 'uri'), 'x', 0.2,
                              note=note))
        figures.append(Figure('2', 'Repeat run (nothing sent) ÷ ansible.builtin.uri', ratios('repeat', 'uri'), 'x',
                              0.1, note=note))
    figures.append(Figure('3', 'First sends ÷ ansible.builtin.debug loop', ratios('first', 'debug'), 'x', 1.5,
                          note=note))
    figures.append(Figure('3', 'Repeat run ÷ ansible.builtin.debug loop', ratios('repeat', 'debug'), 'x', 1.2,
                          note=note))
    extra_cpu = {name: 1000 * (median(cpus[name]) - median(cpus['debug'])) / items for name in ('first', 'repeat')}
    context.append(['1–3: CPU time above the debug run, per item', f'first sends {extra_cpu["first"]:.3f} ms, repeat run '
                    f'{extra_cpu["repeat"]:.3f} ms (user + system time of ansible-playbook and its workers, difference of '
                    'the medians; includes once per run the import of the collection\'s client, which the task times '
                    'do not)', f'the stand-in: {1000 * sum(stand_in_cpu) / (items * len(stand_in_cpu)):.3f} ms of CPU '
                    'per POST (all first-send runs), on the same two cores',
                    f'debug itself: {1000 * median(times["debug"]) / items:.3f} ms per item'])
    for name, label in (('first', 'alert module, first sends'), ('repeat', 'alert module, repeat run'),
                        ('uri', 'ansible.builtin.uri, same POSTs'), ('debug', 'ansible.builtin.debug')):
        if not times[name]:
            continue
        context.append([f'1–3: {items}-item loop, {label}', f'{median(times[name]):.3f} s task',
                        f'{1000 * median(times[name]) / items:.2f} ms per item',
                        f'{median(walls[name]):.2f} s whole ansible-playbook run'])


def _expect_delivered(bench: Bench, count: int, what: str) -> None:
    records = bench.requests()
    delivered = [record for record in records if record['response_status'] == 200]
    if len(records) != count or len(delivered) != count:
        raise BenchError(f'{what}: the stand-in got {len(records)} requests ({len(delivered)} acknowledged), '
                         f'expected {count}')


def green_playbook(tasks: int) -> str:
    body = []
    for number in range(tasks):
        kind = number % 3
        if kind == 0:
            body.append(f'    - name: step {number}\n      ansible.builtin.debug:\n'
                        f'        msg: "{{{{ inventory_hostname }}}} step {number}"\n')
        elif kind == 1:
            body.append(f'    - name: step {number}\n      ansible.builtin.set_fact:\n'
                        f'        bench_step_{number}: "{{{{ inventory_hostname }}}}-{number}"\n')
        else:
            body.append(f'    - name: step {number}\n      ansible.builtin.assert:\n'
                        '        that: inventory_hostname is string\n        quiet: true\n')
    return play('green', 'bench', ''.join(body))


def green_pairs(bench: Bench, label: str, playbook: str, inventory: str, with_callback: dict[str, str],
                without: dict[str, str]) -> tuple[list[float], dict[str, list[float]], dict[str, list[float]], str]:
    """Interleaved pairs of green runs with and without the callback, until the ratio's 95% interval is decided.

    Returns the ratios (wall time, one per pair), the wall and CPU times of each arm, and how it ended.
    """
    scale = bench.scale
    walls: dict[str, list[float]] = {'callback': [], 'plain': []}
    cpus: dict[str, list[float]] = {'callback': [], 'plain': []}
    ratios: list[float] = []
    decided = ''
    for number in range(scale.green_max_pairs):
        order = ('callback', 'plain') if number % 2 == 0 else ('plain', 'callback')
        for arm in order:
            run = bench.run(f'{label}-{arm}', playbook, inventory, with_callback if arm == 'callback' else without)
            walls[arm].append(run.wall)
            cpus[arm].append(run.cpu)
        ratios.append(walls['callback'][-1] / walls['plain'][-1])
        interval = bootstrap_ci(ratios)
        shown = f'[{interval[0]:.4f}, {interval[1]:.4f}]' if interval else ''
        print(f'  pair {number + 1}: ratio {ratios[-1]:.4f}, median {median(ratios):.4f} {shown}', flush=True)
        if len(ratios) >= scale.green_min_pairs and interval is not None:
            if interval[1] <= GREEN_RATIO_LIMIT or interval[0] > GREEN_RATIO_LIMIT:
                decided = f'decided after {len(ratios)} pairs'
                break
    return ratios, walls, cpus, decided


def case_green(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 4: a green run of hosts x tasks with the callback enabled vs not, pairs until the interval decides."""
    scale = bench.scale
    inventory = bench.inventory('green.ini', scale.green_hosts)
    playbook = bench.write('green.yml', green_playbook(scale.green_tasks))
    with_callback = bench.env(callback=True, timing=False, TEMPERSTACK_WEBHOOK_URL=bench.webhook('bench-green'),
                              TEMPERSTACK_LEDGER_PATH=bench.ledger('green'))
    without = bench.env(timing=False)
    bench.reset()
    ratios, walls, cpus, decided = green_pairs(bench, 'green', playbook, inventory, with_callback, without)
    sent = bench.requests()
    if sent:
        raise BenchError(f'green run: the callback sent {len(sent)} alerts, expected none')
    if not os.path.exists(bench.ledger('green')):
        raise BenchError('green run: the callback never opened its ledger; was it enabled?')
    pairs = len(ratios)
    note = (f'{scale.green_hosts} hosts × {scale.green_tasks} tasks, whole ansible-playbook wall time; '
            f'{pairs} interleaved pairs (ABBA), {decided or "stopped at the pair limit"}')
    figures.append(Figure('4', 'Green run: callback enabled ÷ not enabled (wall)', ratios, 'x', GREEN_RATIO_LIMIT,
                          note=note))
    cpu_ratios = [a / b for a, b in zip(cpus['callback'], cpus['plain'])]
    figures.append(Figure('4', 'Green run: callback enabled ÷ not enabled (CPU time)', cpu_ratios, 'x', None,
                          note='user + system time of ansible-playbook and every process it reaped'))
    context.append([f'4: green run, {scale.green_hosts} hosts × {scale.green_tasks} tasks',
                    f'{median(walls["plain"]):.2f} s without the callback',
                    f'{median(walls["callback"]):.2f} s with it',
                    f'CPU {median(cpus["plain"]):.2f} s / {median(cpus["callback"]):.2f} s'])
    fixed_cost(bench, with_callback, without, median(walls['plain']), context)


def fixed_cost(bench: Bench, with_callback: dict[str, str], without: dict[str, str], green_wall: float,
               context: list[list[str]], case: str = '4', label: str = 'fixed') -> None:
    """What the callback costs a run regardless of its size: a one-task play, with and without it.

    Less noisy than the green run's ratio, because each run is short: it shows how much of that ratio is the
    callback's (loading, set-up, the end of the run) and how much is the machine's noise.
    """
    playbook = bench.write('fixed.yml', play('fixed', 'bench', '    - name: one task\n      ansible.builtin.debug:\n'
                                             '        msg: one task\n'))
    inventory = bench.inventory('local.ini', None)
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[float] = []
    for number in range(bench.scale.fixed_pairs):
        runs = {}
        for arm in (('callback', 'plain') if number % 2 == 0 else ('plain', 'callback')):
            runs[arm] = bench.run(f'{label}-{arm}', playbook, inventory, with_callback if arm == 'callback' else without,
                                  memory=True)
        walls.append(runs['callback'].wall - runs['plain'].wall)
        cpus.append(runs['callback'].cpu - runs['plain'].cpu)
        rss.append((runs['callback'].memory['main_hwm_kb'] - runs['plain'].memory['main_hwm_kb']) / 1024)
    added = median(walls)
    context.append([f'{case}: what the callback adds to any run (a one-task play)',
                    f'{1000 * added:.0f} ms wall, {1000 * median(cpus):.0f} ms CPU (medians of '
                    f'{bench.scale.fixed_pairs} interleaved pairs)',
                    f'ansible-playbook peak RSS +{median(rss):.1f} MB',
                    f'{100 * added / green_wall:.1f} % of the green run without the callback'])


def case_storm(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 5: every host fails, scope host: each Alarm once, a bounded end of run, bounded memory."""
    scale = bench.scale
    hosts = scale.storm_hosts
    inventory = bench.inventory('storm.ini', hosts)
    playbook = bench.write('storm.yml', play('storm', 'bench', (
        '    - name: break\n      ansible.builtin.fail:\n        msg: "storm failure on {{ inventory_hostname }}"\n')))
    lags: dict[str, list[float]] = {'callback': [], 'plain': []}
    pss_delta, hwm_delta, helper, helper_pss, once = [], [], [], [], []
    walls: dict[str, list[float]] = {'callback': [], 'plain': []}
    mem: dict[str, list[dict[str, int]]] = {'callback': [], 'plain': []}
    for number in range(scale.storm_pairs):
        order = ('callback', 'plain') if number % 2 == 0 else ('plain', 'callback')
        for arm in order:
            bench.reset()
            if arm == 'callback':
                ledger = bench.ledger(f'storm-{number}')
                env = bench.env(callback=True, TEMPERSTACK_WEBHOOK_URL=bench.webhook('bench-storm'),
                                TEMPERSTACK_LEDGER_PATH=ledger, TEMPERSTACK_SCOPE='host')
            else:
                env = bench.env()
            run = bench.run(f'storm-{arm}', playbook, inventory, env, expect=(2,), memory=True)
            if run.timing.get('results') != hosts:
                raise BenchError(f'storm: {run.timing.get("results")} host results, expected {hosts}')
            lags[arm].append(run.end_lag)
            walls[arm].append(run.wall)
            mem[arm].append(run.memory)
            if arm == 'callback':
                once.append(_storm_once(bench, hosts, ledger))
        pss_delta.append((mem['callback'][-1]['peak_pss_kb'] - mem['plain'][-1]['peak_pss_kb']) / 1024)
        hwm_delta.append((mem['callback'][-1]['main_hwm_kb'] - mem['plain'][-1]['main_hwm_kb']) / 1024)
        helper.append(mem['callback'][-1]['helper_hwm_kb'] / 1024)
        helper_pss.append(mem['callback'][-1]['helper_pss_kb'] / 1024)
        print(f'  pair {number + 1}: last task → end {lags["callback"][-1]:.2f} s (without: {lags["plain"][-1]:.2f} s); '
              f'peak PSS {mem["callback"][-1]["peak_pss_kb"] / 1024:.1f} MB (without: '
              f'{mem["plain"][-1]["peak_pss_kb"] / 1024:.1f} MB), ansible-playbook VmHWM Δ {hwm_delta[-1]:.1f} MB, '
              f'delivery process VmHWM {helper[-1]:.1f} MB (PSS {helper_pss[-1]:.1f} MB); alarms exactly once: '
              f'{once[-1] or "yes"}', flush=True)
    exact = sum(1 for value in once if value == '')
    figures.append(Figure('5', f'Failure storm ({hosts} hosts, scope host): every Alarm exactly once',
                          [0.0 if value == '' else 1.0 for value in once], 'count', 0.0, basis='every',
                          shown=f'{exact}/{len(once)} runs' + ('' if exact == len(once) else ': ' + '; '.join(once)),
                          target='every run', note='stand-in records: one acknowledged Alarm per host, no other request'))
    figures.append(Figure('5', 'Failure storm: last task → end of run', lags['callback'], 's', 5.0, basis='every',
                          note='last host result (bench_timing callback) to the exit of ansible-playbook'))
    figures.append(Figure('5', 'Failure storm: peak memory above the run without the callback', pss_delta, 'MB', 30.0,
                          note='per pair: the peak of the summed PSS of ansible-playbook and all its descendants, '
                          'sampled every 20 ms, minus the same for the run without the callback; the median of the pairs, '
                          'because the peak of either run moves by ±10 MB with what the task workers hold at the moment'))
    context.append([f'5: failure storm, {hosts} hosts', f'last task → end {median(lags["plain"]):.2f} s without the '
                    f'callback, {median(lags["callback"]):.2f} s with it',
                    f'whole run {median(walls["plain"]):.2f} s / {median(walls["callback"]):.2f} s',
                    f'peak PSS {median([m["peak_pss_kb"] for m in mem["plain"]]) / 1024:.1f} MB / '
                    f'{median([m["peak_pss_kb"] for m in mem["callback"]]) / 1024:.1f} MB; ansible-playbook\'s own peak '
                    f'RSS (VmHWM) +{median(hwm_delta):.1f} MB; the delivery process (alive only while it delivers): peak '
                    f'RSS {median(helper):.1f} MB, peak PSS {median(helper_pss):.1f} MB'])


def _storm_once(bench: Bench, hosts: int, ledger: str) -> str:
    """'' when the stand-in got exactly one acknowledged Alarm per host and nothing else, else what was wrong."""
    records = bench.requests()
    ids: dict[str, int] = {}
    problems = []
    for record in records:
        body = record.get('json') or {}
        if body.get('status') != 'Alarm' or record['response_status'] != 200:
            problems.append(f'{body.get("status")} answered {record["response_status"]}')
        ids[body.get('alert_id', '')] = ids.get(body.get('alert_id', ''), 0) + 1
    duplicates = sum(count - 1 for count in ids.values())
    if len(ids) != hosts:
        problems.append(f'{len(ids)} distinct alerts for {hosts} hosts')
    if duplicates:
        problems.append(f'{duplicates} sent more than once')
    conn = sqlite3.connect(ledger)
    try:
        queued = conn.execute('SELECT count(*) FROM outbox').fetchone()[0]
    finally:
        conn.close()
    if queued:
        problems.append(f'{queued} still queued')
    return '; '.join(problems[:3])


def backoff_bound(retries: int) -> float:
    """The longest total backoff of the client for ``retries`` retries, from its own constants.

    Imported from the staged collection (main() puts it on sys.path), so the bound follows the code.
    """
    from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import (  # pylint: disable=import-outside-toplevel
        BACKOFF_BASE,
        BACKOFF_CAP,
    )
    return sum(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (number - 1)) for number in range(1, retries + 1))


def case_dead(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 6: the endpoint accepts connections and never answers."""
    scale = bench.scale
    timeout, retries, flush = scale.dead_timeout, scale.dead_retries, scale.dead_flush
    inventory = bench.inventory('local.ini', None)
    failing = bench.write('dead-play.yml', play('dead endpoint', 'bench', (
        '    - name: break\n      ansible.builtin.fail:\n        msg: the play fails, so an Alarm is due\n')))
    module = bench.write('dead-module.yml', play('dead endpoint', 'bench', (
        '    - name: alert\n      temperstack.alerting.alert:\n        alert_name: bench dead endpoint\n'
        f'        status: Alarm\n        timeout: {timeout}\n        retries: {retries}\n')))
    url = bench.webhook('bench-dead')
    added_callback, added_module, kept = [], [], []
    for number in range(scale.dead_pairs):
        order = ('callback', 'plain') if number % 2 == 0 else ('plain', 'callback')
        walls = {}
        for arm in order:
            bench.reset()
            if arm == 'callback':
                bench.hang_everything()
                ledger = bench.ledger(f'dead-callback-{number}')
                env = bench.env(callback=True, TEMPERSTACK_WEBHOOK_URL=url, TEMPERSTACK_LEDGER_PATH=ledger,
                                TEMPERSTACK_TIMEOUT=str(timeout), TEMPERSTACK_RETRIES=str(retries),
                                TEMPERSTACK_FLUSH_TIMEOUT=f'{flush:g}')
            else:
                env = bench.env()
            walls[arm] = bench.run(f'dead-{arm}', failing, inventory, env, expect=(2,)).wall
            if arm == 'callback':
                kept.append(_queued(ledger))
        bench.reset()
        added_callback.append(walls['callback'] - walls['plain'])
        tasks = {}
        for arm in ('hanging', 'answering') if number % 2 == 0 else ('answering', 'hanging'):
            bench.reset()
            if arm == 'hanging':
                bench.hang_everything()
            env = bench.env(TEMPERSTACK_WEBHOOK_URL=url, TEMPERSTACK_LEDGER_PATH=bench.ledger(f'dead-module-{arm}-{number}'))
            tasks[arm] = bench.run(f'dead-module-{arm}', module, inventory, env,
                                   expect=(2,) if arm == 'hanging' else (0,)).task_seconds
        bench.reset()
        added_module.append(tasks['hanging'] - tasks['answering'])
        print(f'  pair {number + 1}: callback +{added_callback[-1]:.2f} s, module +{added_module[-1]:.2f} s', flush=True)
    module_bound = timeout * (retries + 1) + backoff_bound(retries)
    figures.append(Figure('6', f'Dead endpoint: wall time the callback adds (flush_timeout {flush:g} s)', added_callback,
                          's', flush + 1.0, basis='every', target=f'≤ flush_timeout + 1 s = {flush + 1.0:.2f} s',
                          note='failing play against a hanging stand-in, minus the same play without the callback'))
    figures.append(Figure('6', f'Dead endpoint: time the module adds (timeout {timeout} s, {retries + 1} attempts)',
                          added_module, 's', module_bound, basis='every',
                          target=f'≤ timeout × attempts + backoff = {module_bound:.2f} s',
                          note='the task against a hanging stand-in, minus the same task against an answering one'))
    context.append(['6: dead endpoint', f'the undelivered Alarm stayed queued for the next run in {sum(kept)}/{len(kept)} '
                    'runs', f'client timeout {timeout} s, retries {retries}', f'longest backoff {backoff_bound(retries):.2f} s'])


def _queued(ledger: str) -> int:
    conn = sqlite3.connect(ledger)
    try:
        return 1 if conn.execute('SELECT count(*) FROM outbox').fetchone()[0] == 1 else 0
    finally:
        conn.close()


def case_ledger(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 7: the ledger with 100,000 records, and 12 concurrent writer processes."""
    scale = bench.scale
    env = dict(os.environ, PYTHONPATH=bench.collections)
    command = [
        bench.python, LEDGER_BENCH, 'scale', '--ledger', bench.ledger('scale'), '--records', str(scale.ledger_records),
        '--samples', str(scale.ledger_samples), '--writers', str(scale.writers), '--distinct', str(scale.writer_distinct),
        '--increments', str(scale.writer_increments), '--queued', str(scale.writer_queued),
    ]
    done = subprocess.run(command, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError('ledger bench failed:\n' + done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    with open(os.path.join(bench.work, 'logs', 'ledger.json'), 'w', encoding='utf-8') as handle:
        json.dump(result, handle, indent=2)
    records = scale.ledger_records
    first = result['decide_send_record']
    figures.append(Figure('7', f'Ledger of {records:,} records: decision + record per alert', [first['median_ms']],
                          'ms', 1.0, target='median < 1 ms',
                          shown=f'{first["median_ms"]:.3f} ms median (p99 {first["p99_ms"]:.3f} ms, n {first["n"]})',
                          note='dispatch() of a new alert: lookup, claim, send through the client (an opener that '
                          'answers at once), record, release'))
    writers = result['writers']
    lost = ((writers['increments_expected'] - writers['increments_counted']) + writers['distinct_missing']
            + (writers['queued_expected'] - writers['queued_found']) + abs(writers['everyone_sends'] - 1)
            + len(writers['failed_writers']) + writers['ledger_errors'])
    figures.append(Figure('7', f'{writers["writers"]} concurrent writer processes: lost updates', [float(lost)], 'count',
                          0.0, basis='every', target='none',
                          shown=(f'{lost} (counter {writers["increments_counted"]}/{writers["increments_expected"]}, '
                                 f'records {writers["distinct_expected"] - writers["distinct_missing"]}/'
                                 f'{writers["distinct_expected"]}, queued {writers["queued_found"]}/'
                                 f'{writers["queued_expected"]}, shared alert sent {writers["everyone_sends"]}×, '
                                 f'{writers["ledger_errors"]} errors)'),
                          note='read-modify-write under claim, distinct records, outbox entries and one alert decided '
                          'by every writer at once'))
    mb = 1024 * 1024
    context.append([f'7: ledger, {records:,} records', f'file {result["file_bytes"] / mb:.1f} MB '
                    f'({result["file_bytes"] / records:.0f} bytes per record)',
                    f'filled in {result["fill_seconds"]:.1f} s (one transaction per record)',
                    f'prune: {result["prune_forgotten"]:,} of {result["records_before_prune"]:,} forgotten in '
                    f'{result["prune_seconds"]:.3f} s; nothing due {result["prune_nothing_due_seconds"]:.3f} s; '
                    f'daily check {result["prune_if_due_not_due_ms"]:.3f} ms; file after {result["file_bytes_after_prune"] / mb:.1f} MB'])
    context.append(['7: ledger, per operation', f'open + daily check + lookup + close {result["open_lookup_close"]["median_ms"]:.3f} ms',
                    f'decision with nothing to send {result["decide_nothing_to_send"]["median_ms"]:.3f} ms; '
                    f'status change {result["decide_status_change"]["median_ms"]:.3f} ms',
                    f'{writers["writers"]} writers done in {writers["seconds"]:.2f} s, per alert median '
                    f'{writers["op_median_ms_worst_writer"]:.3f} ms (slowest writer)'])


# -- issue 11: the PostgreSQL ledger (cases 8-11) -----------------------------------------------------

PG_DECISION_LIMIT_MS = 2.0
PG_LOOP_RATIO_LIMIT = 1.3
# What a production server does on every commit, and tools/pg_server.sh turns off for its throwaway servers.
DURABLE_COMMITS = {'fsync': 'on', 'synchronous_commit': 'on', 'full_page_writes': 'on'}


def _pg_decisions(bench: Bench, database: str, sqlite_name: str, blocks: int) -> dict[str, t.Any]:
    """ledger_bench.py decisions: PostgreSQL and SQLite blocks of first-send decisions, interleaved."""
    size = bench.scale.pg_decision_block
    env = dict(os.environ, PYTHONPATH=bench.collections, BENCH_LEDGER_URL=bench.postgres(database))
    command = [bench.python, LEDGER_BENCH, 'decisions', '--sqlite', bench.ledger(sqlite_name), '--blocks', str(blocks),
               '--block-size', str(size), '--warmup', str(min(50, size))]
    done = subprocess.run(command, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError('ledger_bench.py decisions failed:\n' + done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    with open(os.path.join(bench.work, 'logs', f'{database}.json'), 'w', encoding='utf-8') as handle:
        json.dump(result, handle)
    return result


def _ms_summary(summary: dict[str, t.Any]) -> str:
    return f'{summary["median_ms"]:.3f} ms median (p99 {summary["p99_ms"]:.3f} ms, n {summary["n"]})'


def case_pg_decision(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 8: one decision (dispatch around an instant send) on the PostgreSQL ledger, interleaved with SQLite."""
    scale = bench.scale
    result = _pg_decisions(bench, 'bench_decision', 'pg-decision', scale.pg_decision_blocks)
    pg, sqlite = result['postgresql'], result['sqlite']
    note = ('dispatch() of a new Alarm with the collection\'s own client (an opener that answers 200 at once): lookup, '
            'silences, claim, lookup, send, record, release; one figure per decision, '
            f'{scale.pg_decision_blocks} blocks of {scale.pg_decision_block} per backend, PostgreSQL and SQLite blocks '
            'alternating (ABBA) in one process')
    figures.append(Figure('8', 'PostgreSQL ledger on loopback: decision + record per alert', result['samples_ms']['postgresql'],
                          'ms', PG_DECISION_LIMIT_MS, target=f'median ≤ {PG_DECISION_LIMIT_MS:g} ms', shown=_ms_summary(pg),
                          note=note))
    ratios = [block['postgresql'] / block['sqlite'] for block in result['blocks']]
    figures.append(Figure('8', 'Decision + record: PostgreSQL ÷ SQLite ledger', ratios, 'x', None,
                          note='per pair of adjacent blocks, the ratio of their medians'))
    # The same on a server that makes every commit durable, as a production one does: the figure above is the
    # collection's cost on the throwaway server; this one adds what the server's disk costs per commit.
    bench.pg_settings(DURABLE_COMMITS)
    try:
        durable = _pg_decisions(bench, 'bench_decision_durable', 'pg-decision-durable', max(2, scale.pg_decision_blocks // 4))
    finally:
        bench.pg_settings({name: None for name in DURABLE_COMMITS})
    figures.append(Figure('8', 'The same, the server with durable commits (fsync, synchronous_commit on)',
                          durable['samples_ms']['postgresql'], 'ms', None, shown=_ms_summary(durable['postgresql']),
                          note='the same measurement after ALTER SYSTEM SET fsync, synchronous_commit and full_page_writes '
                          'to on (tools/pg_server.sh turns them off), a quarter of the blocks; reported, not a target'))
    steps = result['postgresql_steps']
    context.append(['8: decision on PostgreSQL, per ledger call (medians of one block, outside the timed ones)',
                    _steps(steps) + f'; outside the ledger {steps["outside_the_ledger"]:.3f} ms',
                    f'{steps.get("statements_per_decision", "?")} statements (round trips) per decision; with durable '
                    f'commits: {_steps(durable["postgresql_steps"])}',
                    f'SQLite: {_steps(result["sqlite_steps"])}'])
    context.append(['8: decision with nothing to send (on record: one lookup)',
                    f'PostgreSQL {_ms_summary(result["postgresql_nothing_to_send"])}',
                    f'SQLite {_ms_summary(result["sqlite_nothing_to_send"])}',
                    f'first sends on SQLite, same blocks: {_ms_summary(sqlite)}'])


def _steps(breakdown: dict[str, t.Any]) -> str:
    """'lookup ×2 0.123 ms, ...': each ledger call a decision makes, how often, and its median time per decision."""
    names = {'try_claim': 'claim'}
    return ', '.join(f'{names.get(step, step)}{" ×%g" % value["calls"] if value["calls"] != 1 else ""} {value["median_ms"]:.3f} ms'
                     for step, value in breakdown['steps'].items())


def _no_fallback(bench: Bench, name: str) -> None:
    """The shared ledger was used throughout: nothing fell back to the controller's local file."""
    from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import (  # pylint: disable=import-outside-toplevel
        fallback_path,
    )
    path = fallback_path(bench.ledger(name))
    if os.path.exists(path):
        raise BenchError(f'the PostgreSQL ledger was unreachable during the run: {path} exists (see the run logs)')


def case_pg_loop(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 9: the 100-item first-send loop with the PostgreSQL ledger against the same loop with the SQLite one."""
    scale = bench.scale
    items = scale.loop_items
    inventory = bench.inventory('local.ini', None)
    playbook = bench.write('pg-loop-module.yml', play('loop', 'bench', (
        '    - name: alerts\n      temperstack.alerting.alert:\n'
        '        alert_name: "bench {{ bench_round }} alert {{ item }}"\n        status: Alarm\n'
        f'      loop: "{{{{ range({items}) | list }}}}"\n')))
    url = bench.webhook('bench-pg-loop')
    envs = {
        'postgresql': bench.env(TEMPERSTACK_WEBHOOK_URL=url, TEMPERSTACK_LEDGER_URL=bench.postgres('bench_loop'),
                                TEMPERSTACK_LEDGER_PATH=bench.ledger('pg-loop-local')),
        'sqlite': bench.env(TEMPERSTACK_WEBHOOK_URL=url, TEMPERSTACK_LEDGER_PATH=bench.ledger('pg-loop-sqlite')),
    }
    times: dict[str, dict[str, list[float]]] = {arm: {'first': [], 'repeat': []} for arm in envs}
    walls: dict[str, list[float]] = {arm: [] for arm in envs}
    for number in range(scale.pg_loop_rounds):
        order = ('postgresql', 'sqlite') if number % 2 == 0 else ('sqlite', 'postgresql')
        extra = ['-e', f'bench_round={number}']
        for arm in order:
            bench.reset()
            first = bench.run(f'pg-loop-{arm}-first', playbook, inventory, envs[arm], args=extra)
            _expect_delivered(bench, items, f'{arm} ledger, first sends')
            bench.reset()
            repeat = bench.run(f'pg-loop-{arm}-repeat', playbook, inventory, envs[arm], args=extra)
            _expect_delivered(bench, 0, f'{arm} ledger, repeat run')
            times[arm]['first'].append(first.task_seconds)
            times[arm]['repeat'].append(repeat.task_seconds)
            walls[arm].append(first.wall)
        print(f'  round {number + 1}/{scale.pg_loop_rounds}: first sends PostgreSQL {times["postgresql"]["first"][-1]:.3f} s, '
              f'SQLite {times["sqlite"]["first"][-1]:.3f} s; repeat {times["postgresql"]["repeat"][-1]:.3f} s / '
              f'{times["sqlite"]["repeat"][-1]:.3f} s', flush=True)
    _no_fallback(bench, 'pg-loop-local')
    recorded = bench.pg_query('bench_loop', "SELECT count(*) FROM temperstack.alerts WHERE status = 'Alarm'")[0][0]
    if recorded != items * scale.pg_loop_rounds:
        raise BenchError(f'PostgreSQL loop: the shared ledger holds {recorded} records, expected {items * scale.pg_loop_rounds}')

    def ratios(kind: str) -> list[float]:
        return [a / b for a, b in zip(times['postgresql'][kind], times['sqlite'][kind])]

    note = (f'{items}-item loop of the alert module, task time; one ratio per round, {scale.pg_loop_rounds} rounds, the '
            'backend that goes first alternating')
    figures.append(Figure('9', 'First sends: PostgreSQL ledger ÷ SQLite ledger', ratios('first'), 'x', PG_LOOP_RATIO_LIMIT,
                          note=note))
    figures.append(Figure('9', 'Repeat run (nothing sent): PostgreSQL ÷ SQLite ledger', ratios('repeat'), 'x', None,
                          note=note))
    figures.append(Figure('9', 'First sends, whole ansible-playbook run (wall): PostgreSQL ÷ SQLite ledger',
                          [a / b for a, b in zip(walls['postgresql'], walls['sqlite'])], 'x', None,
                          note=('the same runs, start to exit: with ledger_url set, ansible-playbook imports psycopg when '
                                'it loads the alert plugin, before the task starts, so that its workers inherit it')))
    for arm, label in (('postgresql', 'PostgreSQL ledger'), ('sqlite', 'SQLite ledger')):
        context.append([f'9: {items}-item loop, {label}', f'first sends {median(times[arm]["first"]):.3f} s task '
                        f'({1000 * median(times[arm]["first"]) / items:.2f} ms per item)',
                        f'repeat {median(times[arm]["repeat"]):.3f} s ({1000 * median(times[arm]["repeat"]) / items:.2f} ms per item)',
                        f'{median(walls[arm]):.2f} s whole ansible-playbook run (first sends)'])


def case_pg_green(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 10: case 4 with the callback's ledger in PostgreSQL."""
    scale = bench.scale
    inventory = bench.inventory('green.ini', scale.green_hosts)
    playbook = bench.write('green.yml', green_playbook(scale.green_tasks))
    with_callback = bench.env(callback=True, timing=False, TEMPERSTACK_WEBHOOK_URL=bench.webhook('bench-pg-green'),
                              TEMPERSTACK_LEDGER_URL=bench.postgres('bench_green'),
                              TEMPERSTACK_LEDGER_PATH=bench.ledger('pg-green-local'))
    without = bench.env(timing=False)
    bench.reset()
    ratios, walls, cpus, decided = green_pairs(bench, 'pg-green', playbook, inventory, with_callback, without)
    sent = bench.requests()
    if sent:
        raise BenchError(f'green run, PostgreSQL ledger: the callback sent {len(sent)} alerts, expected none')
    if not bench.pg_query('bench_green', "SELECT 1 FROM temperstack.meta WHERE name = 'last_prune'"):
        raise BenchError('green run, PostgreSQL ledger: the callback never used the shared ledger; was it enabled?')
    _no_fallback(bench, 'pg-green-local')
    note = (f'{scale.green_hosts} hosts × {scale.green_tasks} tasks, whole ansible-playbook wall time, ledger_url set; '
            f'{len(ratios)} interleaved pairs (ABBA), {decided or "stopped at the pair limit"}')
    figures.append(Figure('10', 'Green run, PostgreSQL ledger: callback enabled ÷ not enabled (wall)', ratios, 'x',
                          GREEN_RATIO_LIMIT, note=note))
    cpu_ratios = [a / b for a, b in zip(cpus['callback'], cpus['plain'])]
    figures.append(Figure('10', 'Green run, PostgreSQL ledger: callback enabled ÷ not enabled (CPU time)', cpu_ratios, 'x',
                          None, note='user + system time of ansible-playbook and every process it reaped'))
    context.append([f'10: green run, PostgreSQL ledger, {scale.green_hosts} hosts × {scale.green_tasks} tasks',
                    f'{median(walls["plain"]):.2f} s without the callback', f'{median(walls["callback"]):.2f} s with it',
                    f'CPU {median(cpus["plain"]):.2f} s / {median(cpus["callback"]):.2f} s'])
    fixed_cost(bench, with_callback, without, median(walls['plain']), context, case='10', label='pg-fixed')


def case_routing(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 13: case 4 with routing in use: group_vars name one of two integrations for every host, each with its
    endpoint (TEMPERSTACK_WEBHOOK_URL_<NAME>), beside the default one. A green run resolves no host's variables."""
    scale = bench.scale
    os.makedirs(os.path.join(bench.work, 'playbooks', 'routing', 'group_vars'), exist_ok=True)
    names = [f'h{number:04d}' for number in range(1, scale.green_hosts + 1)]
    half = len(names) // 2
    inventory = bench.write('routing/routing.ini', '[web]\n' + '\n'.join(names[:half]) + '\n\n[db]\n'
                            + '\n'.join(names[half:]) + '\n\n[bench:children]\nweb\ndb\n\n[all:vars]\nansible_connection=local\n'
                            f'ansible_python_interpreter={bench.python}\n')
    for group in ('web', 'db'):
        bench.write(f'routing/group_vars/{group}.yml', f'---\ntemperstack_integration: {group}\n')
    playbook = bench.write('green.yml', green_playbook(scale.green_tasks))
    with_callback = bench.env(callback=True, timing=False, TEMPERSTACK_WEBHOOK_URL=bench.webhook('bench-routing'),
                              TEMPERSTACK_WEBHOOK_URL_WEB=bench.webhook('bench-routing-web'),
                              TEMPERSTACK_WEBHOOK_URL_DB=bench.webhook('bench-routing-db'),
                              TEMPERSTACK_LEDGER_PATH=bench.ledger('routing'))
    without = bench.env(timing=False)
    bench.reset()
    ratios, walls, cpus, decided = green_pairs(bench, 'routing', playbook, inventory, with_callback, without)
    sent = bench.requests()
    if sent:
        raise BenchError(f'green run with routing: the callback sent {len(sent)} alerts, expected none')
    if not os.path.exists(bench.ledger('routing')):
        raise BenchError('green run with routing: the callback never opened its ledger; was it enabled?')
    note = (f'{scale.green_hosts} hosts × {scale.green_tasks} tasks in two groups whose group_vars name two '
            f'integrations; {len(ratios)} interleaved pairs (ABBA), {decided or "stopped at the pair limit"}')
    figures.append(Figure('13', 'Green run with routing: callback enabled ÷ not enabled (wall)', ratios, 'x',
                          GREEN_RATIO_LIMIT, note=note))
    context.append([f'13: green run with routing, {scale.green_hosts} hosts × {scale.green_tasks} tasks',
                    f'{median(walls["plain"]):.2f} s without the callback', f'{median(walls["callback"]):.2f} s with it',
                    f'CPU {median(cpus["plain"]):.2f} s / {median(cpus["callback"]):.2f} s'])


class FleetRun(t.NamedTuple):
    problems: str
    alerts_per_second: float
    decisions_per_second: float
    decision_ms: list[float]
    dispatch_ms: list[float]
    open_ms: list[float]
    window: float
    overlap: float
    sent_by: list[int]
    raced: int
    start_spread: float


def case_fleet(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 11: several controllers, each with many forks, deciding the same alerts on one PostgreSQL ledger at once."""
    scale = bench.scale
    hosts, controllers, forks = scale.fleet_alerts, scale.fleet_controllers, scale.fleet_forks
    inventory = bench.inventory('fleet.ini', hosts)
    playbook = bench.write('fleet.yml', play('fleet', 'bench', (
        '    - name: alert\n      temperstack.alerting.alert:\n'
        '        alert_name: "fleet {{ bench_round }}: disk full on {{ inventory_hostname }}"\n'
        '        alert_id: "bench-fleet-{{ bench_round }}-{{ inventory_hostname }}"\n        status: Alarm\n')))
    pg_url = bench.postgres('bench_fleet')
    url = bench.webhook('bench-fleet')
    runs: list[FleetRun] = []
    for number in range(scale.fleet_runs):
        bench.reset()
        specs, logs = [], []
        # bench_decisions holds each controller's alert task until this moment, so that all of them start it together.
        start_at = time.time() + scale.fleet_start_delay
        for controller in range(1, controllers + 1):
            # Each controller has its own Ansible home, temporary files and local (fallback) ledger file, as
            # separate machines would; they share the endpoint and the PostgreSQL ledger.
            home = os.path.join(bench.work, 'fleet', f'controller-{controller}')
            for sub in ('ansible-home', 'tmp'):
                os.makedirs(os.path.join(home, sub), exist_ok=True)
            decisions = os.path.join(home, f'decisions-{number}.log')
            logs.append(decisions)
            env = bench.env(
                TEMPERSTACK_WEBHOOK_URL=url, TEMPERSTACK_LEDGER_URL=pg_url,
                TEMPERSTACK_LEDGER_PATH=bench.ledger(f'fleet-controller-{controller}'), ANSIBLE_FORKS=str(forks),
                ANSIBLE_HOME=os.path.join(home, 'ansible-home'), ANSIBLE_LOCAL_TEMP=os.path.join(home, 'tmp'),
                ANSIBLE_REMOTE_TEMP=os.path.join(home, 'tmp'), ANSIBLE_CALLBACKS_ENABLED='bench_timing,bench_decisions',
                BENCH_DECISIONS_FILE=decisions, BENCH_START_AT=repr(start_at),
            )
            specs.append({'label': f'fleet-{number}-controller-{controller}', 'playbook': playbook, 'inventory': inventory,
                          'env': env, 'args': ['-e', f'bench_round={number}']})
        results = bench.run_together(specs)
        for controller in range(1, controllers + 1):
            _no_fallback(bench, f'fleet-controller-{controller}')
        runs.append(_fleet_result(bench, number, hosts, results, logs, start_at))
        run = runs[-1]
        print(f'  run {number + 1}/{scale.fleet_runs}: {hosts} alerts exactly once: {run.problems or "yes"}; '
              f'{run.alerts_per_second:.1f} alerts/s, decision p99 {_p99(run.decision_ms):.2f} ms, sent by the controllers '
              f'{"/".join(map(str, run.sent_by))}, {run.raced} found it sent after waiting for a claim, starts within '
              f'{1000 * run.start_spread:.0f} ms, overlap {100 * run.overlap:.0f} %', flush=True)
    failed = [run.problems for run in runs if run.problems]
    if failed and bench.smoke:
        # The smoke asserts no target, but this is correctness, not speed: make test must fail on it.
        raise BenchError(f'fleet: the alerts were not delivered exactly once: {"; ".join(failed)}')
    exact = len(runs) - len(failed)
    every = f'{controllers} controllers × {forks} forks, the same {hosts} alerts'
    figures.append(Figure('11', f'Fleet ({every}): every alert delivered exactly once',
                          [0.0 if not run.problems else 1.0 for run in runs], 'count', 0.0, basis='every',
                          shown=f'{exact}/{len(runs)} runs' + ('' if exact == len(runs) else ': ' + '; '.join(
                              run.problems for run in runs if run.problems)),
                          target='every run', note=(
                              'stand-in records: one acknowledged Alarm per alert and nothing else; the shared ledger holds '
                              'each alert once, no outbox entry and no claim left; the changed tasks of all controllers '
                              'add up to the number of alerts')))
    figures.append(Figure('11', 'Fleet: throughput (alerts delivered per second)', [run.alerts_per_second for run in runs],
                          '/s', None, note=(f'{hosts} alerts over the time from the first controller\'s start of the alert '
                                            'task to the last one\'s end of it; one value per run')))
    all_decisions = [value for run in runs for value in run.decision_ms]
    figures.append(Figure('11', 'Fleet: p99 decision time', [_p99(run.decision_ms) for run in runs], 'ms', None,
                          shown=f'{_p99(all_decisions):.3f} ms p99 (median {median(all_decisions):.3f} ms, '
                          f'n {len(all_decisions)} decisions)',
                          note=('dispatch() in each task worker minus the POST inside it (tools/bench/callback_plugins/'
                                'bench_decisions.py): lookup, silences, claim (waiting for another controller\'s, if it '
                                'holds one), lookup, record, release; the values are the p99 of each run')))
    dispatch = [value for run in runs for value in run.dispatch_ms]
    opens = [value for run in runs for value in run.open_ms]
    context.append([f'11: fleet, {every}, {len(runs)} runs',
                    f'{median([run.decisions_per_second for run in runs]):.1f} decisions/s; alert task '
                    f'{median([run.window for run in runs]):.1f} s; the controllers started it within '
                    f'{1000 * max(run.start_spread for run in runs):.0f} ms of each other and ran it together for '
                    f'{100 * median([run.overlap for run in runs]):.0f} % of that time',
                    'sends per controller: ' + ', '.join('/'.join(map(str, run.sent_by)) for run in runs) +
                    f'; decisions that waited for another\'s claim and found the alert sent: '
                    f'{", ".join(str(run.raced) for run in runs)}',
                    f'dispatch with the POST: median {median(dispatch):.3f} ms, p99 {_p99(dispatch):.3f} ms; opening the '
                    f'ledger in a worker (psycopg import, connection, schema check): median {median(opens):.1f} ms, '
                    f'p99 {_p99(opens):.1f} ms'])


def _p99(values: t.Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0


def _fleet_result(bench: Bench, number: int, hosts: int, results: list[Run], logs: list[str], start_at: float) -> FleetRun:
    prefix = f'bench-fleet-{number}-'
    expected = {f'{prefix}h{host:04d}' for host in range(1, hosts + 1)}
    problems: list[str] = []
    counts: dict[str, int] = {}
    for record in bench.requests():
        body = record.get('json') or {}
        alert_id = body.get('alert_id', '')
        counts[alert_id] = counts.get(alert_id, 0) + 1
        if record['response_status'] != 200 or body.get('status') != 'Alarm':
            problems.append(f'{alert_id}: {body.get("status")} answered {record["response_status"]}')
    missing = len(expected - set(counts))
    duplicates = sum(count - 1 for alert_id, count in counts.items() if alert_id in expected)
    unexpected = sum(count for alert_id, count in counts.items() if alert_id not in expected)
    for count, what in ((missing, 'never delivered'), (duplicates, 'delivered more than once'),
                        (unexpected, 'requests for no alert of this run')):
        if count:
            problems.append(f'{count} {what}')
    recorded = bench.pg_query('bench_fleet', "SELECT count(*) FROM temperstack.alerts WHERE alert_id LIKE %s AND "
                              "status = 'Alarm'", (prefix + '%',))[0][0]
    left = bench.pg_query('bench_fleet', 'SELECT (SELECT count(*) FROM temperstack.outbox), '
                          '(SELECT count(*) FROM temperstack.claims)')[0]
    if recorded != hosts:
        problems.append(f'the ledger holds {recorded} of the {hosts} alerts')
    if left[0] or left[1]:
        problems.append(f'{left[0]} outbox entries and {left[1]} claims left in the ledger')
    changed = sum(_recap_changed(run.log) for run in results)
    if changed != hosts:
        problems.append(f'{changed} tasks reported changed, expected {hosts}')

    decision_ms, dispatch_ms, open_ms, sent_by = [], [], [], []
    raced = 0
    for path in logs:
        sent = decided = 0
        for line in _read(path).splitlines():
            fields = line.split()
            if fields and fields[0] == 'decide':
                elapsed, posting, was_sent, lookups = float(fields[1]), float(fields[2]), fields[3] == '1', int(fields[4])
                decision_ms.append(1000 * (elapsed - posting))
                dispatch_ms.append(1000 * elapsed)
                sent += was_sent
                decided += 1
                raced += lookups > 1 and not was_sent
            elif fields and fields[0] == 'ledger':
                open_ms.append(1000 * float(fields[1]))
        if decided != hosts:
            raise BenchError(f'fleet: {path} has {decided} decisions, expected {hosts}: did bench_decisions instrument '
                             'the alert module?')
        sent_by.append(sent)
    # bench_timing notes the task's start before bench_decisions holds it: it started at start_at, or later.
    starts = [max(start_at, run.timing['tasks'][0][1]) for run in results]
    ends = [run.timing['stats'] for run in results]
    window = max(ends) - min(starts)
    return FleetRun('; '.join(problems[:4]), hosts / window, len(results) * hosts / window, decision_ms, dispatch_ms,
                    open_ms, window, max(0.0, min(ends) - max(starts)) / window, sent_by, raced, max(starts) - min(starts))


def _recap_changed(log: str) -> int:
    """The sum of changed=N over the hosts of a run's PLAY RECAP."""
    total, recap = 0, False
    for line in _read(log).splitlines():
        if line.startswith('PLAY RECAP'):
            recap = True
        elif recap and 'changed=' in line:
            total += int(line.split('changed=', 1)[1].split()[0])
    return total


def stand_in_check(bench: Bench, context: list[list[str]]) -> None:
    """The stand-in's own service time on a bare socket, next to a minimal responder; no Nagle/delayed-ACK stall."""
    body = json.dumps({'alert_name': 'probe', 'status': 'Alarm'}).encode('utf-8')
    port = int(bench.base_url.rsplit(':', 1)[1])

    def request(path: str) -> bytes:
        return (f'POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
                f'Content-Length: {len(body)}\r\nConnection: close\r\n\r\n').encode('ascii') + body

    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(64)

    def minimal() -> None:
        answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\nConnection: close\r\n\r\n'
        while True:
            try:
                conn, _address = listener.accept()
            except OSError:
                return
            with conn:
                data = b''
                while len(data) < len(request('/')) and not data.endswith(body):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(answer + b'{"status": "success"}')

    threading.Thread(target=minimal, daemon=True).start()

    def round_trip(target_port: int, path: str) -> float:
        start = time.perf_counter()
        with socket.create_connection(('127.0.0.1', target_port)) as conn:
            conn.sendall(request(path))
            while conn.recv(65536):
                pass
        return time.perf_counter() - start

    samples = 40 if bench.smoke else 400
    results = {}
    for name, target_port, path in (('stand-in', port, '/api/integration/webhook/bench-probe'),
                                    ('minimal', listener.getsockname()[1], '/')):
        for _warm in range(10):
            round_trip(target_port, path)
        times = sorted(round_trip(target_port, path) for _sample in range(samples))
        results[name] = (median(times) * 1000, times[int(0.99 * (len(times) - 1))] * 1000, times[-1] * 1000)
    listener.close()
    bench.reset()
    if results['stand-in'][1] >= 40.0:
        raise BenchError(f'the stand-in stalls: p99 round trip {results["stand-in"][1]:.1f} ms (Nagle/delayed ACK?)')
    stand_in, bare = results['stand-in'], results['minimal']
    context.append(['stand-in, one webhook POST on a bare socket', f'median {stand_in[0]:.3f} ms, p99 {stand_in[1]:.3f} ms, '
                    f'max {stand_in[2]:.3f} ms', f'minimal responder: median {bare[0]:.3f} ms, p99 {bare[1]:.3f} ms',
                    'one write per response, TCP_NODELAY: no stall (a Nagle/delayed-ACK stall costs ≥ 40 ms)'])


def client_check(bench: Bench, context: list[list[str]]) -> None:
    """One POST through ansible-core's open_url as shipped (a new TLS context per call) and through open_webhook."""
    from ansible.module_utils.urls import open_url  # pylint: disable=import-outside-toplevel
    from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import (  # pylint: disable=import-outside-toplevel
        open_webhook,
    )
    url = bench.webhook('bench-client')
    options = {
        'data': json.dumps({'alert_name': 'probe', 'status': 'Alarm'}).encode('utf-8'),
        'headers': {'Content-Type': 'application/json'}, 'http_agent': 'bench', 'timeout': 10,
        'validate_certs': True, 'ca_path': None, 'follow_redirects': 'none', 'use_proxy': False, 'use_netrc': False,
    }

    def post(opener: t.Callable[..., t.Any]) -> float:
        start = time.perf_counter()
        with opener(url, method='POST', **options) as response:
            response.read()
        return time.perf_counter() - start

    samples = 5 if bench.smoke else 40
    results = {}
    for name, opener in (('open_url', open_url), ('open_webhook', open_webhook)):
        post(opener)
        results[name] = 1000 * median([post(opener) for _sample in range(samples)])
    bench.reset()
    context.append(['one POST to the stand-in, in one process', f'`open_url` as ansible-core ships it: '
                    f'{results["open_url"]:.2f} ms (it builds a TLS context, loading the CA store, on every call)',
                    f'`open_webhook` (one TLS context per process): {results["open_webhook"]:.2f} ms', ''])


# Case 12, run by the Python of .venv (aiohttp is pinned there for the source's unit tests): the source's own main() on
# a loopback port, loaded by path as ansible-rulebook loads it, and concurrent aiohttp clients in the same event loop.
# Each event is timed from just before its request is sent to the moment the source puts it on the queue.
_EDA_SCRIPT = r'''
import asyncio, json, runpy, socket, sys, time
source, events, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import aiohttp
module = runpy.run_path(source)
sent, queued = {}, {}

class TimedQueue(asyncio.Queue):
    async def put(self, item):
        queued[item['payload']['alert_id']] = time.perf_counter()
        await super().put(item)

async def main():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    queue = TimedQueue()
    server = asyncio.create_task(module['main'](queue, {'host': '127.0.0.1', 'port': port, 'token': 'bench',
                                                        'hosts_from': 'none'}))
    url = f'http://127.0.0.1:{port}/'
    async with aiohttp.ClientSession(headers={'Authorization': 'Bearer bench'}) as session:
        for _attempt in range(200):
            try:
                async with session.get(url + 'healthz') as response:
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
        todo = iter(range(events))

        async def client():
            for number in todo:
                alert_id = f'bench-{number}'
                body = {'alert_name': 'Bench', 'status': 'Alarm', 'alert_id': alert_id}
                sent[alert_id] = time.perf_counter()
                async with session.post(url, json=body) as response:
                    assert response.status == 200, response.status
                    await response.read()
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - start
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    assert queue.qsize() == events, queue.qsize()
    print(json.dumps({'per_second': events / wall, 'ms': sorted((queued[k] - sent[k]) * 1000 for k in sent)}))

asyncio.run(main())
'''


def case_eda(bench: Bench, figures: list[Figure], context: list[list[str]]) -> None:
    """Case 12: the EDA event source on loopback: events per second it accepts, and the p99 from request to queued."""
    scale = bench.scale
    source = os.path.join(bench.collections, COLLECTION_SUBDIR, 'extensions', 'eda', 'plugins', 'event_source', 'webhook.py')
    rates, p99s, medians = [], [], []
    for _round in range(scale.eda_rounds):
        done = subprocess.run([bench.python, '-c', _EDA_SCRIPT, source, str(scale.eda_events), str(scale.eda_clients)],
                              capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise BenchError(f'case 12: the source benchmark failed: {done.stderr.strip()[-2000:]}')
        result = json.loads(done.stdout)
        rates.append(result['per_second'])
        p99s.append(_p99(result['ms']))
        medians.append(median(result['ms']))
    note = (f'temperstack.alerting.webhook with a token, hosts_from none, {scale.eda_events} distinct Alarms per round '
            f'from {scale.eda_clients} concurrent aiohttp clients in the same event loop (so the figures include the '
            'clients\' own cost), one round per value')
    figures.append(Figure('12', 'EDA source: events accepted per second on loopback', rates, '/s', None, note=note))
    figures.append(Figure('12', 'EDA source: p99 from request to queued', p99s, 'ms', None, note=note))
    context.append(['12: EDA source, median request to queued per round', ', '.join(f'{value:.3f} ms' for value in medians)])


CASES: dict[str, tuple[str, t.Callable[[Bench, list[Figure], list[list[str]]], None]]] = {
    '1': ('module, uri and debug loops (cases 1-3)', case_loops),
    '4': ('callback overhead on a green run', case_green),
    '5': ('failure storm', case_storm),
    '6': ('dead endpoint', case_dead),
    '7': ('ledger at scale', case_ledger),
    '8': ('PostgreSQL ledger: one decision', case_pg_decision),
    '9': ('PostgreSQL ledger: 100-item first-send loop', case_pg_loop),
    '10': ('PostgreSQL ledger: callback overhead on a green run', case_pg_green),
    '11': ('PostgreSQL ledger: a fleet of controllers at once', case_fleet),
    '12': ('EDA event source: events per second and p99 to queued', case_eda),
    '13': ('callback overhead on a green run with routing (group_vars, two integrations)', case_routing),
}


# -- the report ------------------------------------------------------------------------------------


def machine() -> list[tuple[str, str]]:
    cpu = next((line.split(':', 1)[1].strip() for line in _read('/proc/cpuinfo').splitlines()
                if line.startswith('model name')), 'unknown')
    memory = next((line.split(':', 1)[1].strip() for line in _read('/proc/meminfo').splitlines()
                   if line.startswith('MemTotal')), 'unknown')
    kb = int(memory.split()[0]) if memory.split() and memory.split()[0].isdigit() else 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return [
        ('CPUs (`nproc`)', str(usable)),
        ('CPU model', cpu),
        ('memory', f'{kb / 1024 / 1024:.1f} GiB' if kb else memory),
        ('kernel', os.uname().release),
    ]


def versions(bench: Bench) -> list[tuple[str, str]]:
    core = subprocess.run([os.path.join(bench.bin, 'ansible-playbook'), '--version'], check=False, capture_output=True,
                          text=True, env=bench.env()).stdout.splitlines()
    version = '?'
    for line in _read(os.path.join(REPO, 'galaxy.yml')).splitlines():
        if line.startswith('version:'):
            version = line.split(':', 1)[1].strip()
    commit = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'], check=False, capture_output=True,
                            text=True).stdout.strip() or 'unknown'
    dirty = subprocess.run(['git', '-C', REPO, 'status', '--porcelain', '--untracked-files=no'], check=False,
                           capture_output=True, text=True).stdout.strip()
    return [
        ('Python', sys.version.split()[0]),
        ('ansible-core', core[0].split('core', 1)[1].strip(' []') if core and 'core' in core[0] else '?'),
        ('temperstack.alerting', f'{version} (git {commit}{", with uncommitted changes" if dirty else ""})'
         if not bench.given_collections else f'the copy in {bench.collections} (--collections)'),
    ] + bench.pg_versions


def table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace('|', '\\|')
    lines = ['| ' + ' | '.join(header) + ' |', '| ' + ' | '.join('---' for _column in header) + ' |']
    lines.extend('| ' + ' | '.join(cell(item) for item in row) + ' |' for row in rows)
    return '\n'.join(lines)


def report(bench: Bench, figures: list[Figure], context: list[list[str]], started: datetime.datetime,
           seconds: float, load_start: str, load_end: str, cases: list[str]) -> str:
    mode = 'a smoke run: one scaled-down iteration per case, targets not asserted' if bench.smoke else 'a full run'
    scale = bench.scale
    parts = [
        '# Performance',
        '',
        f'Generated by `make bench` (tools/bench/bench.py, {mode}) on {started:%Y-%m-%d %H:%M} UTC, in '
        f'{seconds / 60:.1f} minutes. Do not edit by hand: run `make bench` again.',
        '',
        'Every figure is a ratio or a bound measured in this run, each case interleaved with its baseline '
        '(ABAB…, the order alternating from pair to pair). Ratios are per pair; the table gives their median, the 95% '
        'confidence interval of that median (percentile bootstrap, 4,000 resamples) and the spread (lowest – highest '
        'pair). A median target is *met* when the whole interval is within it, *MISSED* when the whole interval is '
        'beyond it, and *undecided* otherwise; a bound must hold in every run. Absolute times are only context: this '
        'is a shared machine.',
        '',
        '## Results',
        '',
        table(['#', 'Figure', 'Measured', '95% CI of the median', 'Spread', 'n', 'Target', 'Result'],
              [figure.row() for figure in figures]),
        '',
        'What each figure is:',
        '',
    ]
    grouped: dict[str, list[Figure]] = {}
    for figure in figures:
        if figure.note:
            grouped.setdefault(figure.note, []).append(figure)
    for note, members in grouped.items():
        names = '; '.join(f'{figure.case}. {figure.name}' for figure in members)
        parts.append(f'- **{names}**: {note}.')
    parts += ['', '## Context (absolute times of this run)', '',
              table(['What', 'Measured', '', ''], context), '',
              '## Machine', '',
              table(['', ''], [list(row) for row in machine()]
                    + [['load average (1, 5, 15 min) at the start', load_start],
                       ['load average at the end', load_end]]
                    + [[f'load average before: {CASES[case][0]}', bench.loads.get(case, '–')] for case in cases]),
              '',
              '## Versions', '',
              table(['', ''], [list(row) for row in versions(bench)]), '',
              '## How the cases are run', '',
              f'- **1–3.** One play on `localhost` (connection local) with one task looping over {scale.loop_items} '
              'items, in three forms: `temperstack.alerting.alert` (alert_name `bench {{ bench_round }} alert '
              '{{ item }}`, status Alarm; endpoint and ledger from `TEMPERSTACK_WEBHOOK_URL` and '
              '`TEMPERSTACK_LEDGER_PATH`, as a controller would set them), `ansible.builtin.uri` POSTing the same '
              'JSON to the same stand-in, and `ansible.builtin.debug` with the same templated message. In each of '
              f'{scale.loop_rounds} rounds the module runs twice (first sends: its {scale.loop_items} alerts are new, '
              'so all are sent; repeat: all are on record, nothing is sent) and debug once, debug first in one round '
              f'and last in the next; the first {scale.uri_rounds} rounds add uri. One ledger serves all rounds, as on '
              'a real controller; `bench_round` makes each round\'s alerts new to it. The stand-in must have '
              'acknowledged exactly the expected POSTs (all of them, or none for the repeat). The figure is the '
              'task\'s own time, from its start to the play\'s stats (timestamps from '
              'tools/bench/callback_plugins/bench_timing.py, enabled in every run); the start-up of ansible-playbook, '
              'the same for all, is in the context table.',
              f'- **4.** {scale.green_hosts} hosts (connection local) × {scale.green_tasks} tasks that run on the '
              'controller only (debug, set_fact, assert), five forks: the cheapest real run, so the callback\'s '
              'share is as large as it can be. With the callback: `ANSIBLE_CALLBACKS_ENABLED` names it, the endpoint '
              'is the stand-in, the ledger persists between its runs (as on a real controller); without: not '
              'enabled. Whole ansible-playbook wall time per run; pairs continue until the 95% interval of the '
              f'median ratio lies entirely on one side of {GREEN_RATIO_LIMIT} (at least {scale.green_min_pairs}, at '
              f'most {scale.green_max_pairs} pairs). The stand-in must receive nothing.',
              f'- **5.** {scale.storm_hosts} hosts that all fail one task; callback with `scope: host`, a fresh ledger '
              'per run, default timeout, retries and flush_timeout. Memory: the harness samples every 20 ms the '
              'proportional set size (PSS, /proc/PID/smaps_rollup) of ansible-playbook and all its descendants (task '
              'workers, the callback\'s delivery process) and keeps the highest sum; the figure is that peak minus the '
              'peak of the same run without the callback. PSS, not RSS: the workers are forks sharing most of their '
              'pages with ansible-playbook, and summed RSS would count those pages once per worker. The context table '
              'adds the peak RSS (VmHWM) of ansible-playbook itself and of the delivery process.',
              f'- **6.** The stand-in is scripted to read every webhook request and never answer. Callback: a play '
              f'that fails on localhost, with timeout {scale.dead_timeout} s, retries {scale.dead_retries}, '
              f'flush_timeout {scale.dead_flush:g} s, against the same play without the callback (wall time). Module: '
              f'one task with timeout {scale.dead_timeout} and retries {scale.dead_retries} against the hanging stand-in, '
              'against the same task with the stand-in answering (task time). The bound for the module is '
              'timeout × attempts plus the longest backoff the client can draw (its jitter only shortens it).',
              f'- **7.** tools/bench/ledger_bench.py, with the collection\'s own `Ledger`, `dispatch` and '
              f'`TemperstackClient` (an opener that answers 200 at once instead of a network): {scale.ledger_records:,} '
              'records written one transaction each, half of them resolved and aged past the 90-day retention; '
              f'{scale.ledger_samples:,} new alerts decided and recorded on it, then the same again (nothing to send), '
              f'then their OKs; then {scale.writers} writer processes (fork+exec) start at the same moment on that '
              f'ledger, each recording {scale.writer_distinct} alerts of its own, incrementing a shared counter alert '
              f'{scale.writer_increments} times under `claim` (a read-modify-write: a lost update shows as a lower '
              f'count), queuing {scale.writer_queued} outbox entries, and deciding one alert that all of them want to '
              'send (it must be sent once). Last, the prune that forgets the aged half.',
              '- **8–11.** The PostgreSQL ledger (`ledger_url`, issue 11), on a server the harness starts for the run '
              'with tools/pg_server.sh in the work directory (PostgreSQL from Debian\'s package, on 127.0.0.1, '
              'scram-sha-256 password logins, fsync and synchronous_commit off as for all the tests) and stops at the '
              'end; each case has a database of its own, the ledger\'s schema created by its first use with the '
              'database owner\'s role.',
              f'- **8.** tools/bench/ledger_bench.py `decisions`: the collection\'s `dispatch` with `TemperstackClient` '
              'and an opener that answers 200 at once, on a PostgreSQL ledger (`open_ledger` of the URL, one connection) '
              f'and a SQLite one in the same process, {scale.pg_decision_blocks} blocks of {scale.pg_decision_block} new '
              'alerts per backend, alternating block by block (ABBA), after a warm-up. The figure is the median of all '
              'PostgreSQL decisions with its bootstrap interval; the ratio is per pair of adjacent blocks. Then, outside '
              'the timed blocks, the same alerts again (nothing to send) and one block per backend with each ledger call '
              'timed and the statements counted. Last, a quarter of the blocks again after `ALTER SYSTEM` turns fsync, '
              'synchronous_commit and full_page_writes on (reset afterwards): what a production server\'s commits add.',
              f'- **9.** Cases 1–3\'s module loop ({scale.loop_items} items, first sends, then the repeat with nothing '
              'to send), once with `TEMPERSTACK_LEDGER_URL` (the PostgreSQL ledger) and once with only '
              f'`TEMPERSTACK_LEDGER_PATH` (SQLite), in {scale.pg_loop_rounds} rounds, the backend going first '
              'alternating; each ledger persists over the rounds, and the stand-in must acknowledge exactly the expected '
              'POSTs. Task time, one ratio per round.',
              '- **10.** Case 4 with `TEMPERSTACK_LEDGER_URL` set for the callback: the same green run, the same '
              'stopping rule for the pairs, the same one-task play for the fixed cost. The shared ledger must show the '
              'callback\'s daily prune (it opened it), and no fallback file may appear.',
              f'- **11.** {scale.fleet_controllers} ansible-playbook processes started at the same moment, each a '
              f'controller of its own (own ANSIBLE_HOME, temporary and fallback files) with forks={scale.fleet_forks}, all '
              f'running one play over the same {scale.fleet_alerts} hosts (connection local) whose one task is '
              '`temperstack.alerting.alert` with an `alert_id` per host, status Alarm, new in each run. So every alert is '
              f'decided {scale.fleet_controllers} times at about the same moment (the controllers go through the hosts in '
              'the same order), and must reach the stand-in exactly once: that is the figure, checked against the '
              'stand-in\'s records, the ledger (each alert on record once, no outbox entry or claim left) and the play '
              'recaps (the changed tasks add up to the number of alerts). tools/bench/callback_plugins/bench_decisions.py '
              'holds each controller\'s alert task until a common moment (so that start-up differences do not separate '
              'them), and times `dispatch` in each worker and the POST inside it, which the decision time leaves out. '
              'Ansible runs each host\'s task in a new worker process, so each decision opens its own connection: the '
              'context table gives what that costs. Throughput is alerts delivered per second of the alert task, from '
              f'the common start to the last controller\'s end. {scale.fleet_runs} runs, each with new alerts.',
              '',
              '## How to reproduce', '',
              '```sh',
              'make venv     # once: .venv with Python 3.13 and ansible-core 2.21',
              'make bench    # about 10 minutes on a quiet machine, up to 30 on a busy one; rewrites docs/performance.md',
              "make bench BENCH_ARGS='--cases 4'   # one case (1 = cases 1-3); the report then holds only that case",
              'make bench-smoke   # one scaled-down iteration of each case (part of make test)',
              "make bench BENCH_ARGS='--cases 8,9,10,11'   # the PostgreSQL ledger (cases 8-11) only",
              '```',
              '',
              'Run it on an otherwise idle machine: other load widens the intervals (case 4 then needs more pairs) '
              'and makes absolute times meaningless. The raw material stays in build/bench/: one log and one '
              'timing file per ansible-playbook run, the generated playbooks and inventories, logs/ledger.json; for '
              'cases 8–11 also logs/bench_decision*.json (every decision time), fleet/controller-*/decisions-*.log and '
              'logs/pg_server.out. The PostgreSQL cases need Debian\'s postgresql package (tools/pg_server.sh installs '
              'it with apt-get when it runs as root) and psycopg in .venv (requirements-test.txt).',
              '']
    notes = _read(NOTES).strip()
    if notes and not bench.smoke:
        parts += [notes, '']
    return '\n'.join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--smoke', action='store_true', help='one scaled-down iteration of each case, no targets')
    parser.add_argument('--work', help='work directory (emptied first); default build/bench or build/bench-smoke')
    parser.add_argument('--output', help='the report; default docs/performance.md (smoke: WORK/performance.md)')
    parser.add_argument('--cases', default=','.join(CASES), help='comma-separated cases (1 runs cases 1-3)')
    parser.add_argument('--strict', action='store_true', help='exit 1 when a target is missed or undecided')
    parser.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                        help='change one scale setting, e.g. --set loop_rounds=8 (see Scale in this file)')
    parser.add_argument('--collections', help='measure the temperstack.alerting under DIR/ansible_collections '
                        'instead of staging the work tree (to compare a change against what it replaces)')
    args = parser.parse_args(argv)
    work = args.work or os.path.join(REPO, 'build', 'bench-smoke' if args.smoke else 'bench')
    output = args.output or (os.path.join(work, 'performance.md') if args.smoke else
                             os.path.join(REPO, 'docs', 'performance.md'))
    cases = [case.strip() for case in args.cases.split(',') if case.strip()]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.error(f'unknown case(s) {", ".join(unknown)}; choose from {", ".join(CASES)}')

    # SIGTERM unwinds like Ctrl-C, so that the stand-in and a running ansible-playbook are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    scale = SMOKE if args.smoke else FULL
    for setting in args.set:
        name, _sep, value = setting.partition('=')
        if name not in Scale._fields:
            parser.error(f'--set {setting}: no such setting; choose from {", ".join(Scale._fields)}')
        scale = scale._replace(**{name: type(getattr(scale, name))(value)})
    bench = Bench(scale, work, args.smoke, args.collections)
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.monotonic()
    load_start = loadavg()
    print(f'bench: {"smoke" if args.smoke else "full"} run, load average {load_start}, work directory {work}', flush=True)
    figures: list[Figure] = []
    context: list[list[str]] = []
    try:
        bench.setup()
        sys.path.insert(0, bench.collections)
        stand_in_check(bench, context)
        client_check(bench, context)
        for case in cases:
            bench.loads[case] = loadavg()
            print(f'bench: {CASES[case][0]} (load average {bench.loads[case]})', flush=True)
            case_start = time.monotonic()
            CASES[case][1](bench, figures, context)
            print(f'bench: {CASES[case][0]} took {time.monotonic() - case_start:.0f} s', flush=True)
    except BenchError as exc:
        print(f'bench: FAILED: {exc}', file=sys.stderr)
        return 2
    finally:
        bench.close()
    text = report(bench, figures, context, started, time.monotonic() - clock, load_start, loadavg(), cases)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output + '.tmp', 'w', encoding='utf-8') as handle:
        handle.write(text)
    os.replace(output + '.tmp', output)
    print()
    print(table(['#', 'Figure', 'Measured', '95% CI of the median', 'Spread', 'n', 'Target', 'Result'],
                [figure.row() for figure in figures]))
    print(f'\nbench: report written to {output} ({(time.monotonic() - clock) / 60:.1f} minutes)')
    if bench.smoke:
        print('bench: smoke run: targets are not asserted')
        return 0
    failed = [figure for figure in figures if figure.verdict in ('MISSED', 'undecided')]
    if failed and args.strict:
        print(f'bench: {len(failed)} target(s) missed or undecided', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
