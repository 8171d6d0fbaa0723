# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench_decisions: times each decision of the alert module in the task workers (tools/bench/bench.py, case 11).

ansible-playbook loads callbacks before it forks a task worker, and the plugin loader takes an action plugin that
is already imported from sys.modules. So this callback imports the alert action plugin into ansible-playbook and
wraps two of the names its ``run()`` calls; every worker forked afterwards inherits the wrapped ones:

- ``dispatch``: one line per decision, ``decide <dispatch seconds> <of which the POST> <sent 0/1> <lookups>``;
  ``lookups`` is 2 when the decision took the alert's claim (it sent, or found that another controller had sent
  while it waited), 1 when the first lookup found the alert on record;
- ``shared_ledger``: one line per call, ``ledger <seconds>`` (a worker's first call opens the connection).

Lines go to the file named by E(BENCH_DECISIONS_FILE), appended with O_APPEND (whole lines from many processes).
Without that variable it does nothing. Nothing in the collection changes: the wrappers call the originals.

With E(BENCH_START_AT) (seconds since the epoch), the play's first task waits until then before any worker
starts: controllers started together reach their first task at different moments (start-up under load), and
this lines them up, so that they decide the same alerts at the same time.
"""

from __future__ import annotations

import importlib
import os
import time
import typing as t

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_decisions
type: aggregate
short_description: times the alert module's decisions for the temperstack.alerting benchmarks
description:
  - Appends the time of each decision and ledger open made by temperstack.alerting.alert in the task workers to
    the file named by E(BENCH_DECISIONS_FILE).
  - With E(BENCH_START_AT), holds the first task until that time.
"""

ACTION = 'ansible_collections.temperstack.alerting.plugins.action.alert'


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode('ascii'))
    finally:
        os.close(fd)


def _instrument(path: str) -> None:
    module = importlib.import_module(ACTION)
    if getattr(module, '_bench_decisions', None) == path:
        return
    dispatch = getattr(module, '_bench_original_dispatch', module.dispatch)
    shared_ledger = getattr(module, '_bench_original_shared_ledger', module.shared_ledger)

    def timed_dispatch(alert: t.Any, endpoint: t.Any, ledger: t.Any, client: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        posting = [0.0]
        lookups = [0]
        send, lookup = client.send, ledger.lookup

        def timed_send(payload: t.Any) -> t.Any:
            start = time.perf_counter()
            try:
                return send(payload)
            finally:
                posting[0] += time.perf_counter() - start

        def counted_lookup(*lookup_args: t.Any) -> t.Any:
            lookups[0] += 1
            return lookup(*lookup_args)

        client.send, ledger.lookup = timed_send, counted_lookup
        start = time.perf_counter()
        try:
            outcome = dispatch(alert, endpoint, ledger, client, *args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            del ledger.lookup
        _append(path, f'decide {elapsed:.6f} {posting[0]:.6f} {int(outcome.sent)} {lookups[0]}\n')
        return outcome

    def timed_shared_ledger(*args: t.Any, **kwargs: t.Any) -> t.Any:
        start = time.perf_counter()
        ledger = shared_ledger(*args, **kwargs)
        _append(path, f'ledger {time.perf_counter() - start:.6f}\n')
        return ledger

    module._bench_original_dispatch = dispatch
    module._bench_original_shared_ledger = shared_ledger
    module.dispatch = timed_dispatch
    module.shared_ledger = timed_shared_ledger
    module._bench_decisions = path


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_decisions'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: t.Any = None) -> None:
        super().__init__(display=display)
        path = os.environ.get('BENCH_DECISIONS_FILE')
        if path:
            _instrument(path)
        start_at = os.environ.get('BENCH_START_AT')
        self._start_at = float(start_at) if start_at else None

    def v2_playbook_on_task_start(self, task: t.Any, is_conditional: t.Any) -> None:
        # The strategy calls this before it queues the task for any host, so sleeping here holds the whole task.
        if self._start_at is not None:
            delay, self._start_at = self._start_at - time.time(), None
            if delay > 0:
                time.sleep(delay)
