# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Item 6: load. One run raises an Alarm for each of 2,000 hosts (300 in the short variant), the stand-in answers
every request after 100 ms, and the callback runs with its defaults (flush_timeout 30 s).

With scope=host every Alarm is queued at the end of the run, at once: the hardest case for the end-of-run wait.
All must be delivered within flush_timeout, the run must say so in its one line, and the memory of
ansible-playbook and of the delivery process must stay flat while the alerts go out. (Sent one at a time,
2,000 requests of 100 ms take 200 s: the delivery process now runs up to 16 at once, each alert's own Alarm and
OK still in order.)
"""

from __future__ import annotations

import os
import threading
import time

from faultlib import CALLBACK, SECRET_KEY, assert_clean, ledger_rows, pick, stand_in

ALERTS = pick(300, 2000)
LATENCY = 0.1
FLUSH_TIMEOUT = 30.0  # the callback's default, which this test does not change
PLAYBOOK = """\
- name: Storm
  hosts: all
  gather_facts: false
  tasks:
    - name: Break
      ansible.builtin.fail:
        msg: the storm took {{ inventory_hostname }} down
"""


def rss_kib(pid: int, field: str = 'VmRSS') -> int | None:
    try:
        with open(f'/proc/{pid}/status', encoding='utf-8') as handle:
            for line in handle:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def delivery_process_of(pid: int) -> int | None:
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as handle:
                command = handle.read()
            with open(f'/proc/{entry}/stat', encoding='utf-8') as handle:
                parent = int(handle.read().rsplit(')', 1)[1].split()[1])
        except OSError:
            continue
        if parent == pid and b'_outbox_sender' in command:
            return int(entry)
    return None


class MemoryWatch:
    """Samples the resident memory of ansible-playbook and of its delivery process every 100 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: dict[str, list[tuple[float, int]]] = {'ansible-playbook': [], 'delivery process': []}
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delivery = None
        while not self._stop.is_set():
            now = time.time()
            for name, pid in (('ansible-playbook', self.pid), ('delivery process', delivery)):
                if pid is None:
                    continue
                rss = rss_kib(pid)
                if rss is not None:
                    self.samples[name].append((now, rss))
                    self.peaks[name] = max(self.peaks.get(name, 0), rss_kib(pid, 'VmHWM') or rss)
            if delivery is None:
                delivery = delivery_process_of(self.pid)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_alert_storm_with_latency(harness, work_dir, figures):
    directory = os.path.join(work_dir, 'load')
    playbook = harness.write(directory, 'storm.yml', PLAYBOOK)
    inventory = harness.write(directory, 'inventory.ini', '[all]\n' + ''.join(
        f'node{index:04d} ansible_connection=local ansible_python_interpreter="{{{{ ansible_playbook_python }}}}"\n'
        for index in range(ALERTS)))
    ledger = os.path.join(directory, 'ledger', 'ledger.sqlite3')
    with stand_in(os.path.join(directory, 'stand-in'), latency=LATENCY) as server:
        plain = harness.playbook(playbook, args=['-f', '50'], inventory=inventory, verbosity='')
        assert plain.rc == 2
        env = {
            'ANSIBLE_CALLBACKS_ENABLED': CALLBACK, 'TEMPERSTACK_BASE_URL': server.url, 'TEMPERSTACK_API_KEY': SECRET_KEY,
            'TEMPERSTACK_LEDGER_PATH': ledger, 'TEMPERSTACK_SCOPE': 'host',
        }
        process, command, started, out_path, err_path = harness.start(playbook, env=env, args=['-f', '50'], inventory=inventory)
        watch = MemoryWatch(process.pid)
        try:
            process.wait(timeout=FLUSH_TIMEOUT * 2 + plain.seconds * 3 + 60)
        finally:
            watch.stop()
        ended = time.time()
        run = harness.finish(process, command, started, out_path, err_path)
        records = server.requests()
        delivered = [r for r in records if r['delivered']]
        stats = server.stats()

    assert_clean(run)
    assert run.rc == 2
    assert f'Temperstack: sent {ALERTS} Alarm' in run.stdout, run.stdout[-2000:]
    assert '[WARNING]: temperstack' not in run.stderr
    assert len(delivered) == len(records) == ALERTS
    assert len({r['json']['alert_id'] for r in delivered}) == ALERTS
    assert ledger_rows(ledger)['outbox'] == []
    first_request = min(r['time'] for r in records)
    last_request = max(r['time'] for r in records)
    # Every Alarm is queued when the run ends; from the first request to the end of ansible-playbook is the
    # end-of-run wait, which flush_timeout bounds (plus the 2 s the callback gives the process to report).
    wait = ended - first_request
    assert wait <= FLUSH_TIMEOUT + 2, f'the end of the run waited {wait:.1f} s for delivery'

    # Flat: once the storm is loaded and the first quarter is out (SQLite's page cache and the sending threads'
    # allocations have grown to their size), sending the rest grows neither process by more than 4 MiB, whatever
    # the number of alerts.
    settled = first_request + (last_request - first_request) * 0.25
    delivery_samples = [rss for when, rss in watch.samples['delivery process'] if settled <= when <= last_request]
    playbook_samples = [rss for when, rss in watch.samples['ansible-playbook'] if settled <= when <= last_request]
    assert delivery_samples and playbook_samples, 'no memory sample while the alerts went out'
    for name, samples in (('the delivery process', delivery_samples), ('ansible-playbook', playbook_samples)):
        growth = max(samples) - min(samples)
        series = _thin([(when - first_request, rss) for when, rss in watch.samples['delivery process']])
        assert growth < 4 * 1024, f'{name} grew by {growth} KiB while sending (delivery process: {series})'
    figures.set('load', 'alerts', ALERTS)
    figures.set('load', 'latency_seconds', LATENCY)
    figures.set('load', 'flush_timeout', FLUSH_TIMEOUT)
    figures.set('load', 'run_seconds', round(run.seconds, 1))
    figures.set('load', 'run_seconds_without_callback', round(plain.seconds, 1))
    figures.set('load', 'delivery_seconds', round(last_request - first_request, 1))
    figures.set('load', 'end_of_run_wait_seconds', round(wait, 1))
    figures.set('load', 'requests_per_second', round(ALERTS / max(last_request - first_request, 0.001), 1))
    figures.set('load', 'peak_concurrent_requests', stats['peak_in_flight'])
    figures.set('load', 'memory_kib', {
        'delivery process: while sending, least': min(delivery_samples),
        'delivery process: while sending, most': max(delivery_samples),
        'delivery process: peak (VmHWM)': watch.peaks.get('delivery process'),
        'ansible-playbook: while sending, least': min(playbook_samples),
        'ansible-playbook: while sending, most': max(playbook_samples),
        'ansible-playbook: peak (VmHWM)': watch.peaks.get('ansible-playbook'),
        'samples while sending': len(delivery_samples),
    })
    figures.set('load', 'delivery_memory_series_kib', _thin(
        [(when - first_request, rss) for when, rss in watch.samples['delivery process'] if when >= first_request - 1]))


def _thin(samples: list[tuple[float, int]], points: int = 12) -> list[tuple[float, int]]:
    if len(samples) <= points:
        return [(round(when, 1), rss) for when, rss in samples]
    step = (len(samples) - 1) / (points - 1)
    return [(round(samples[round(i * step)][0], 1), samples[round(i * step)][1]) for i in range(points)]
