# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ledger at scale (case 7 of tools/bench/bench.py) and the decision on both backends (case 8): run by the
harness, each prints one JSON object.

Usage (the collection must be importable, e.g. PYTHONPATH=<dir holding ansible_collections>):

    python ledger_bench.py scale     --ledger PATH --records N --samples N --writers N ...
    python ledger_bench.py writer    --ledger PATH --writer I --start T ...   (started by `scale`)
    BENCH_LEDGER_URL=postgresql://... python ledger_bench.py decisions --sqlite PATH --blocks N --block-size N

(The URL comes from the environment, not the command line, where any user could read its password.)

Everything goes through the collection's own code: ``Ledger`` and ``dispatch`` from plugin_utils, and the
real ``TemperstackClient`` with an opener that answers 200 at once instead of a network (so a "send"
costs what the client costs, not what a server costs). The only direct SQL is the set-up step that ages
half of the records, so that pruning has something to forget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import build_alert
from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import TemperstackClient
from ansible_collections.temperstack.alerting.plugins.plugin_utils._dispatch import dispatch
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import resolve_endpoint
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import RETENTION_SECONDS, LedgerError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import open_ledger

WEBHOOK_URL = 'https://bench.temperstack.com/api/integration/webhook/BENCHKEY'
COUNTER_ALERT = 'bench-shared-counter'
EVERYONE_ALERT = 'bench-everyone'
DESCRIPTION = '/var is 97%% full on %s (threshold 90%%); growth 2.1 GB/day, full in about 14 hours. Largest: /var/log/app.'


class _Answer:
    """What the opener returns: a 200 with Temperstack's answer."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    @staticmethod
    def getcode():
        return 200

    @staticmethod
    def read(_size=-1):
        return b'{"status": "success"}'


class _CountingOpener:
    """Answers 200 at once; with ``log``, appends one line per request (O_APPEND: safe across processes)."""

    def __init__(self, log=None):
        self.calls = 0
        self._log = log

    def __call__(self, url, **kwargs):
        self.calls += 1
        if self._log:
            fd = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b'%d\n' % os.getpid())
            finally:
                os.close(fd)
        return _Answer()


def _alert(number, status='Alarm', description=None, alert_id=None):
    host = 'web%06d' % number
    return build_alert({
        'alert_name': 'Disk almost full on %s' % host,
        'status': status,
        'alert_priority': 'Critical',
        'alert_id': alert_id or 'bench-disk-%s' % host,
        'description': description or DESCRIPTION % host,
        'alert_url': 'https://grafana.example.com/d/disk?var-host=%s' % host,
        'metric_name': 'disk_used_percent',
        'resource_id': host,
        'resource_name': host,
        'resource_type': 'host',
        'run_book_url': 'https://wiki.example.com/runbooks/disk-full',
    })


def _endpoint():
    return resolve_endpoint({'webhook_url': WEBHOOK_URL}, environ={})


def _client(endpoint, log=None):
    return TemperstackClient(endpoint, timeout=5, retries=0, opener=_CountingOpener(log))


def _ms(seconds):
    return round(seconds * 1000.0, 4)


def _summary(samples):
    ordered = sorted(samples)
    return {
        'n': len(ordered),
        'median_ms': _ms(statistics.median(ordered)),
        'p90_ms': _ms(ordered[int(0.9 * (len(ordered) - 1))]),
        'p99_ms': _ms(ordered[int(0.99 * (len(ordered) - 1))]),
        'max_ms': _ms(ordered[-1]),
    }


def _file_size(path):
    return sum(os.path.getsize(path + suffix) for suffix in ('', '-wal') if os.path.exists(path + suffix))


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def scale(args):
    """Fill the ledger, time the per-alert operations, run the writers, prune; print the results."""
    if os.path.exists(os.path.dirname(args.ledger)):
        shutil.rmtree(os.path.dirname(args.ledger))
    endpoint = _endpoint()
    key = endpoint.ledger_key
    result = {'records': args.records}

    # -- fill: every record through Ledger.record(), one transaction each, as the plugins write them
    with SqliteLedger(args.ledger) as ledger:
        start = time.perf_counter()
        for number in range(args.records):
            # Every other alert is resolved: those are what pruning may forget once they are old.
            ledger.record(key, _alert(number, 'OK' if number % 2 else 'Alarm'))
        result['fill_seconds'] = round(time.perf_counter() - start, 3)
        # A prune that finds nothing old enough: a full look at the ledger; it also marks today's prune as
        # done, so the opens below pay only the daily check, as they would on any day but the first.
        elapsed, _value = _timed(ledger.prune)
        result['prune_nothing_due_seconds'] = round(elapsed, 4)
    # Set-up only: age the resolved half beyond the retention, so that pruning has work to do.
    conn = sqlite3.connect(args.ledger)
    with conn:
        conn.execute("UPDATE alerts SET updated = updated - ? WHERE status = 'OK'", (RETENTION_SECONDS + 86400,))
    conn.close()
    result['file_bytes'] = _file_size(args.ledger)

    # -- what one module task pays to open the ledger (open, daily-prune check, one lookup, close)
    opens = []
    for number in range(args.samples // 10 or 1):
        elapsed, _value = _timed(_open_lookup_close, args.ledger, key, number)
        opens.append(elapsed)
    result['open_lookup_close'] = _summary(opens)

    # -- decision + record per alert, the module's path through dispatch(), with a client that answers at once
    first, repeat, change = [], [], []
    with SqliteLedger(args.ledger) as ledger:
        client = _client(endpoint)
        base = args.records + 1000
        for number in range(base, base + args.samples):
            elapsed, outcome = _timed(dispatch, _alert(number), endpoint, ledger, client)
            assert outcome.sent, outcome
            first.append(elapsed)
        for number in range(base, base + args.samples):
            elapsed, outcome = _timed(dispatch, _alert(number), endpoint, ledger, client)
            assert not outcome.sent, outcome
            repeat.append(elapsed)
        for number in range(base, base + args.samples):
            elapsed, outcome = _timed(dispatch, _alert(number, 'OK'), endpoint, ledger, client)
            assert outcome.sent, outcome
            change.append(elapsed)
    result['decide_send_record'] = _summary(first)
    result['decide_nothing_to_send'] = _summary(repeat)
    result['decide_status_change'] = _summary(change)

    # -- concurrent writers: separate processes (fork+exec), all on this large ledger at once
    result['writers'] = _run_writers(args, endpoint)

    # -- pruning: the daily check when it is not due, then a real prune of the aged half
    with SqliteLedger(args.ledger) as ledger:
        not_due, _value = _timed(ledger.prune_if_due)
        records_before = _count(args.ledger)
        prune_seconds, forgotten = _timed(ledger.prune)
    result['prune_if_due_not_due_ms'] = _ms(not_due)
    result['prune_seconds'] = round(prune_seconds, 4)
    result['prune_forgotten'] = forgotten
    result['records_before_prune'] = records_before
    result['records_after_prune'] = _count(args.ledger)
    result['file_bytes_after_prune'] = _file_size(args.ledger)
    print(json.dumps(result))
    return 0


def _open_lookup_close(path, key, number):
    with SqliteLedger(path) as ledger:
        ledger.prune_if_due()
        ledger.lookup(key, 'bench-disk-web%06d' % number)


def _count(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute('SELECT count(*) FROM alerts').fetchone()[0]
    finally:
        conn.close()


def _run_writers(args, endpoint):
    work = os.path.join(os.path.dirname(args.ledger), 'writers')
    os.makedirs(work, exist_ok=True)
    sends_log = os.path.join(work, 'everyone-sends.log')
    start_at = time.time() + 1.5  # every writer is up and waiting before the first one starts
    processes = []
    for writer in range(args.writers):
        command = [
            sys.executable, os.path.abspath(__file__), 'writer', '--ledger', args.ledger, '--writer', str(writer),
            '--start', repr(start_at), '--distinct', str(args.distinct), '--increments', str(args.increments),
            '--queued', str(args.queued), '--sends-log', sends_log,
        ]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # pylint: disable=consider-using-with
    reports, failures = [], []
    for process in processes:
        out, err = process.communicate(timeout=600)
        if process.returncode != 0:
            failures.append(err.decode('utf-8', 'replace').strip().splitlines()[-1:] or ['exit %d' % process.returncode])
            continue
        reports.append(json.loads(out.decode('utf-8').strip().splitlines()[-1]))

    key = endpoint.ledger_key
    with SqliteLedger(args.ledger) as ledger:
        missing = 0
        for writer in range(args.writers):
            for number in range(args.distinct):
                expected = _alert(_writer_number(writer, number))
                known = ledger.lookup(key, expected.alert_id)
                if known is None or known.fingerprint != expected.fingerprint:
                    missing += 1
        counter = ledger.lookup(key, COUNTER_ALERT)
        counted = int(counter.payload['description'].split()[-1]) if counter else 0
        queued = [entry for entry in ledger.pending(key) if entry.alert.alert_id.startswith('bench-queued-')]
    with open(sends_log, encoding='utf-8') if os.path.exists(sends_log) else _Empty() as handle:
        everyone_sends = len(handle.read().split())
    op_medians = [report['op_median_ms'] for report in reports]
    return {
        'writers': args.writers,
        'failed_writers': failures,
        'ledger_errors': sum(report['errors'] for report in reports),
        'distinct_expected': args.writers * args.distinct,
        'distinct_missing': missing,
        'increments_expected': args.writers * args.increments,
        'increments_counted': counted,
        'queued_expected': args.writers * args.queued,
        'queued_found': len(queued),
        'queued_unique_seq': len({entry.seq for entry in queued}),
        'everyone_sends': everyone_sends,
        'seconds': round(max((report['seconds'] for report in reports), default=0.0), 3),
        'op_median_ms_worst_writer': max(op_medians, default=0.0),
    }


class _Empty:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    @staticmethod
    def read():
        return ''


def _writer_number(writer, number):
    return 10_000_000 + writer * 100_000 + number


def writer(args):
    """One of the concurrent writers: distinct alerts, a shared read-modify-write, one alert for all, the outbox."""
    endpoint = _endpoint()
    key = endpoint.ledger_key
    errors = 0
    ops = []
    delay = args.start - time.time()
    if delay > 0:
        time.sleep(delay)
    started = time.perf_counter()
    with SqliteLedger(args.ledger) as ledger:
        client = _client(endpoint)
        everyone_client = _client(endpoint, log=args.sends_log)
        for number in range(max(args.distinct, args.increments, args.queued)):
            try:
                if number < args.distinct:
                    elapsed, _outcome = _timed(dispatch, _alert(_writer_number(args.writer, number)), endpoint, ledger, client)
                    ops.append(elapsed)
                if number < args.increments:
                    _increment(ledger, key)
                if number < args.queued:
                    ledger.queue(key, _alert(_writer_number(args.writer, number), alert_id='bench-queued-%d-%d' % (args.writer, number)))
                if number == 0:
                    # Every writer decides the very same alert at about the same moment: it must be sent once.
                    dispatch(_alert(1, alert_id=EVERYONE_ALERT), endpoint, ledger, everyone_client)
            except LedgerError as exc:
                errors += 1
                print('writer %d: %s' % (args.writer, exc), file=sys.stderr)
    print(json.dumps({
        'writer': args.writer,
        'errors': errors,
        'seconds': time.perf_counter() - started,
        'op_median_ms': _ms(statistics.median(ops)) if ops else 0.0,
    }))
    return 0


def _increment(ledger, key):
    """A read-modify-write that only the claim protects: a lost update shows as a lower final count."""
    with ledger.claim(key, COUNTER_ALERT, lease=60) as claim:
        current = ledger.lookup(key, COUNTER_ALERT)
        count = int(current.payload['description'].split()[-1]) if current else 0
        ledger.record(key, _alert(0, description='count %d' % (count + 1), alert_id=COUNTER_ALERT), claim=claim)


# -- case 8: one decision on each backend, interleaved --------------------------------------------------

LEDGER_URL_ENV = 'BENCH_LEDGER_URL'
BACKENDS = ('postgresql', 'sqlite')
# The ledger methods dispatch() may call, each timed on its own in the breakdown (claim() calls try_claim and
# release); those a ledger lacks are left out.
STEPS = ('lookup', 'try_claim', 'record', 'release', 'silences', 'streak', 'withheld', 'withhold')


def decisions(args):
    """First-send decisions through dispatch() on a PostgreSQL and a SQLite ledger, in alternating blocks.

    Blocks of ``block_size`` new alerts go to one backend and then the other, the order swapped from block to block,
    so that both see the same machine at nearly the same moments. Every decision is one new alert, sent by the client
    that answers at once and recorded. Afterwards, outside the timed blocks: the repeat decisions (nothing to send)
    and a breakdown of one block per backend into the ledger calls dispatch() makes, with the statements sent.
    """
    url = os.environ.get(LEDGER_URL_ENV)
    if not url:
        raise SystemExit('%s is not set' % LEDGER_URL_ENV)
    endpoint = _endpoint()
    client = _client(endpoint)
    ledgers = {'postgresql': open_ledger(url), 'sqlite': open_ledger(args.sqlite)}
    result = {'samples_ms': {name: [] for name in BACKENDS}, 'blocks': []}
    numbers = iter(range(30_000_000, 40_000_000))
    sent = {name: [] for name in BACKENDS}
    # New to the ledger even when the harness runs this twice on one database.
    run = '%x' % time.time_ns()

    def decide(name, count, again=False):
        """``count`` decisions on one backend: new alerts, or (``again``) alerts it has on record."""
        ledger, times = ledgers[name], []
        for index in range(count):
            number = sent[name][index] if again else next(numbers)
            alert = _alert(number, alert_id='bench-decision-%s-%d' % (run, number))
            elapsed, outcome = _timed(dispatch, alert, endpoint, ledger, client)
            if outcome.sent == again:
                raise SystemExit('decision on alert %d on %s: sent is %s' % (number, ledger.location, outcome.sent))
            if not again:
                sent[name].append(number)
            times.append(elapsed)
        return times

    try:
        for name in BACKENDS:
            # Warm-up: connection, statement preparation, SQLite's write-ahead log, the first pages of the indexes.
            decide(name, args.warmup)
        for block in range(args.blocks):
            order = BACKENDS if block % 2 == 0 else tuple(reversed(BACKENDS))
            medians = {}
            for name in order:
                times = decide(name, args.block_size)
                result['samples_ms'][name].extend(_ms(value) for value in times)
                medians[name] = _ms(statistics.median(times))
            result['blocks'].append(medians)
        for name in BACKENDS:
            result[name] = _summary([value / 1000.0 for value in result['samples_ms'][name]])
            # Alerts already on record: nothing to send, one lookup and no claim.
            result[name + '_nothing_to_send'] = _summary(decide(name, min(len(sent[name]), args.block_size * 4), again=True))
            result[name + '_steps'] = _breakdown(ledgers[name], lambda name=name: decide(name, 1), args.block_size)
    finally:
        for ledger in ledgers.values():
            ledger.close()
    print(json.dumps(result))
    return 0


def _breakdown(ledger, decide, count):
    """Median time per decision in each ledger call, and the statements sent per decision (PostgreSQL only)."""
    steps = [step for step in STEPS if hasattr(ledger, step)]
    spent = {step: [] for step in steps}
    current = {step: 0.0 for step in steps}
    calls = {step: 0 for step in steps}
    statements = [0]

    def timed(step, method):
        def wrapper(*args, **kwargs):
            calls[step] += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                current[step] += time.perf_counter() - start
        return wrapper

    for step in steps:
        setattr(ledger, step, timed(step, getattr(ledger, step)))
    conn = getattr(ledger, '_conn', None)
    counted = conn is not None and hasattr(conn, 'pgconn')
    if counted:
        # Each execute() is one statement, each transaction() two more (BEGIN and COMMIT), one round trip each.
        conn.execute = _counting(conn.execute, statements, 1)
        conn.transaction = _counting(conn.transaction, statements, 2)
    totals = []
    for _decision in range(count):
        for step in steps:
            current[step] = 0.0
        totals.extend(decide())
        for step in steps:
            spent[step].append(current[step])
    for step in steps:
        delattr(ledger, step)
    if counted:
        del conn.execute
        del conn.transaction
    # Only the calls a decision makes, with how many times it makes each.
    result = {'steps': {step: {'calls': round(calls[step] / count, 2), 'median_ms': _ms(statistics.median(spent[step]))}
                        for step in steps if calls[step]}}
    result['total'] = _ms(statistics.median(totals))
    result['outside_the_ledger'] = _ms(statistics.median(
        [total - sum(spent[step][index] for step in steps) for index, total in enumerate(totals)]))
    if counted:
        result['statements_per_decision'] = round(statements[0] / count, 2)
    return result


def _counting(method, counter, step):
    def wrapper(*args, **kwargs):
        counter[0] += step
        return method(*args, **kwargs)
    return wrapper


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    run = sub.add_parser('scale')
    run.add_argument('--ledger', required=True)
    run.add_argument('--records', type=int, default=100_000)
    run.add_argument('--samples', type=int, default=2000)
    run.add_argument('--writers', type=int, default=12)
    run.add_argument('--distinct', type=int, default=200)
    run.add_argument('--increments', type=int, default=25)
    run.add_argument('--queued', type=int, default=20)
    run.set_defaults(func=scale)
    one = sub.add_parser('writer')
    one.add_argument('--ledger', required=True)
    one.add_argument('--writer', type=int, required=True)
    one.add_argument('--start', type=float, required=True)
    one.add_argument('--distinct', type=int, required=True)
    one.add_argument('--increments', type=int, required=True)
    one.add_argument('--queued', type=int, required=True)
    one.add_argument('--sends-log', required=True)
    one.set_defaults(func=writer)
    pair = sub.add_parser('decisions')
    pair.add_argument('--sqlite', required=True)
    pair.add_argument('--blocks', type=int, default=20)
    pair.add_argument('--block-size', type=int, default=100)
    pair.add_argument('--warmup', type=int, default=50)
    pair.set_defaults(func=decisions)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
