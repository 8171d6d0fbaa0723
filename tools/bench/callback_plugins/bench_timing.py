# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench_timing: the benchmark's stopwatch inside ansible-playbook (tools/bench/bench.py, not shipped).

Records the wall-clock time (time.time(), comparable with the harness's own clock) of the run's
events and writes them as JSON to $BENCH_TIMING_FILE when the stats arrive:

    {"start": T, "tasks": [[name, T], ...], "first_result": T, "last_result": T, "results": N, "stats": T}

It does nothing else, so the arms of a comparison pay the same for it.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_timing
type: aggregate
short_description: timestamps of a run for the temperstack.alerting benchmarks
description:
  - Writes the times of the playbook start, each task start, the first and last host result and the stats
    to the file named by E(BENCH_TIMING_FILE).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_timing'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display=display)
        self._events = {'start': None, 'tasks': [], 'first_result': None, 'last_result': None, 'results': 0, 'stats': None}

    def _result(self):
        now = time.time()
        if self._events['first_result'] is None:
            self._events['first_result'] = now
        self._events['last_result'] = now
        self._events['results'] += 1

    def v2_playbook_on_start(self, playbook):
        self._events['start'] = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._events['tasks'].append([task.get_name(), time.time()])

    def v2_runner_on_ok(self, result):
        self._result()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result()

    def v2_runner_on_skipped(self, result):
        self._result()

    def v2_runner_on_unreachable(self, result):
        self._result()

    def v2_playbook_on_stats(self, stats):
        self._events['stats'] = time.time()
        path = os.environ.get('BENCH_TIMING_FILE')
        if path:
            with open(path, 'w', encoding='utf-8') as handle:
                json.dump(self._events, handle)
