#!/usr/bin/env python
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write docs/reliability.md from the figures of a run of the fault suite (tests/faults).

Usage: tools/reliability_report.py FIGURES.json OUTPUT.md

`make faults` runs the long variant of the suite and then this script; every number in the page comes from
that run's FIGURES.json (written by tests/faults/conftest.py), nothing is typed in by hand.
"""

from __future__ import annotations

import json
import sys

FIXED = """\
## Defects these tests found, and their fixes

Each was fixed in `plugins/`, and each fix has a unit test that fails without it (named in parentheses).

1. **A lone surrogate in any text made an invalid request, or a traceback.** Ansible decodes undecodable bytes
   (a command's output, a file name, an environment variable) to lone surrogates. Sent as they were, they made a
   body that is not UTF-8 (Temperstack answers 400, and the callback then drops the Alarm), and SQLite refused to
   store them in the ledger (`Callback dispatch 'v2_playbook_on_stats' failed`, the alert lost). The long run's
   random fuzz found two more ways in: a host name with undecodable bytes, stored in the outbox with the Alarm,
   and an `api_key` given as bytes, which crashed the URL quoting. Fixes: the alert model replaces each lone
   surrogate with U+FFFD (`valid_unicode` in `_alert.py`; `test_lone_surrogates_become_replacement_characters`,
   `test_every_text_is_sent_as_valid_utf8`); the ledger stores its JSON as ASCII with escapes
   (`test_host_names_with_undecodable_bytes_are_stored`); the connection options must be valid text, else an
   error names them (`test_undecodable_bytes_in_connection_options_are_an_endpoint_error`).
2. **`ledger_path` with a NUL or an unencodable character was a traceback** (ValueError from deep inside `os`
   and `sqlite3`). Fix: `Ledger` checks the file name first and raises a `LedgerError` that names `ledger_path`
   (`test_a_path_no_file_can_have_is_a_ledger_error`).
3. **`timeout` too large for a socket was a traceback** (`timeout: 1000000000000` raised OverflowError in the
   task). Fix: `timeout` must be at most 3600 s, checked with `retries` by `check_timeout`/`check_retries` in
   `_client.py`, which the module and now the callback share (`test_check_timeout_rejects_what_a_socket_cannot_take`,
   the `timeout` case of `test_bad_input_fails_before_any_request`).
4. **The callback did not check its delivery settings.** `TEMPERSTACK_FLUSH_TIMEOUT=inf` or `nan` ended the run
   with `Callback dispatch 'v2_playbook_on_stats' failed`; a negative `flush_timeout` produced a bogus "gave no
   report" warning; `TEMPERSTACK_TIMEOUT=-1` left every alert queued without a word; `retries` was unbounded and
   `max_error_chars` of 0 or less meant "no limit"; `TEMPERSTACK_TIMEOUT=1e400`, which ansible-core turns into an
   integer of 400 digits, made the new check itself raise OverflowError (found by the long run). Fix: `timeout`, `retries`, `flush_timeout` (0 to 3600 s)
   and `max_error_chars` (at least 1) are checked when the callback starts; a bad value disables it with one
   warning that names the option (`test_delivery_settings_out_of_range_disable_with_one_warning`,
   `test_check_timeout_takes_integers_too_large_for_a_float`).
5. **An unexpected error in the delivery thread was swallowed**: the thread died and the run reported "1 queued"
   and nothing about why. Fix: `OutboxSender` reports it as a delivery error, and the alerts stay queued
   (`test_an_unexpected_error_is_reported_not_swallowed`).
6. **URL credentials in a task's name reached the Alarm.** Error messages were masked, task names were not, and a
   task named after a templated URL (`Clone {{ repo_url }}`) carried its password into the description. Fix: task
   names are masked like messages (`test_url_credentials_in_a_task_name_are_masked_too`).
7. **A TLS failure did not say why.** An expired certificate and an unknown CA both read
   `failed (CERTIFICATE_VERIFY_FAILED)`. Fix: the message adds OpenSSL's reason, e.g.
   `CERTIFICATE_VERIFY_FAILED: certificate has expired` (`test_tls_failure_says_why_the_certificate_was_refused`).
8. **`timeout: .inf` (or `retries: -.inf`) was a traceback.** ansible-core's own conversion to an integer raises
   OverflowError, which a task shows as "Unexpected failure during module execution", naming no option (found by
   the long run's random fuzz). Fix: the action plugin turns it into `timeout must be a finite number (...)`
   (the infinity cases of `test_wrong_option_types_rejected_by_the_argument_spec`).
9. **A `ca_path` that is not a file read as a connection error**, retried four times as "the connection failed
   ([Errno 2] No such file or directory)", naming nothing (found by the long run's random fuzz). Fix: `check_ca_path`
   in `_client.py`, used by the module and the callback, fails before any request with `ca_path PATH is not a
   file` (the `ca_path` cases of `test_bad_input_fails_before_any_request` and
   `test_delivery_settings_out_of_range_disable_with_one_warning`).
10. **A failure storm could not be delivered within `flush_timeout`.** The delivery process sent one request at a
   time: 2,000 Alarms at 100 ms each need 200 s, and the default `flush_timeout` is 30 s, so most of the storm
   was left for the next run. Fix: when more than 16 alerts wait and the first has got through, the delivery
   process sends up to 16 at once per endpoint; the entries of one alert still go one after another in the order
   they were queued, so an OK never overtakes its Alarm; after a failure no new delivery starts; an endpoint that
   is down still gets one request, not sixteen; only the coordinating thread writes the ledger; a short queue
   still goes strictly oldest first (`OUTBOX_SEND_THREADS` and `send_outbox(..., workers=)` in `_dispatch.py`;
   `test_parallel_delivery_is_bounded_faster_and_keeps_each_alerts_order` and four more). Within a backlog,
   deliveries of different alerts start oldest first but may finish in another order.

One limit remains outside the collection: ansible-core itself converts the callback's integer options before the
callback sees them, and for `TEMPERSTACK_MAX_ERROR_CHARS=inf` (or `TEMPERSTACK_TIMEOUT=inf`) its conversion raises
an OverflowError whose message does not name the option. ansible-playbook reports `Failed to load callback plugin
'temperstack.alerting.playbook_alerts': cannot convert Infinity to integer` and runs on without the callback; the
fuzz counts these cases separately.
"""


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding='utf-8') as handle:
        data = json.load(handle)
    text = render(data)
    with open(argv[2], 'w', encoding='utf-8') as handle:
        handle.write(text)
    print(f'{argv[2]} written from {argv[1]}')
    return 0


def cell(value: object) -> str:
    text = '' if value is None else str(value)
    return text.replace('|', '\\|').replace('\n', ' ')


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(' --- ' for _column in header) + '|']
    lines += ['| ' + ' | '.join(cell(value) for value in row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def trimmed(text: str, limit: int = 150) -> str:
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + '...'


def senders(figures: dict) -> str:
    """Who sent at once in a variant of test_outbox_order.py, e.g. '4 callback runs and module tasks'."""
    return f"{figures['callback_runs']} callback runs" + (' and module tasks' if figures['module_task_runs'] else '')


# The cases of test_interrupted.py, in the order the page lists them.
INTERRUPTIONS = {
    'sigint': 'Ctrl-C (SIGINT to ansible-playbook)',
    'sigterm': 'SIGTERM to ansible-playbook',
    'sigkill-ansible-playbook': 'SIGKILL to ansible-playbook alone',
    'sigkill-everything': 'SIGKILL to ansible-playbook and every process below it',
    'error-abort': 'an ERROR! abort (the next play\'s hosts template fails)',
}
GREEN_INTERRUPTIONS = {'green-sigint': 'Ctrl-C', 'green-sigterm': 'SIGTERM'}


def interrupted_rows(section: dict) -> list[list[object]]:
    """The summary row of test_interrupted.py, if it ran."""
    cases = [section[name] for name in INTERRUPTIONS if name in section]
    greens = [section[name] for name in GREEN_INTERRUPTIONS if name in section]
    if not cases:
        return []
    trials, delivered = sum(c['trials'] for c in cases), sum(c['alarms_delivered'] for c in cases)
    return [['8. interrupted runs',
             f'{trials} failing runs ended while another host was in a long task ({len(cases)} ways: Ctrl-C, SIGTERM, SIGKILL, '
             f"an ERROR! abort); {sum(g['trials'] for g in greens)} green runs stopped while their Alarm was open",
             f'{delivered} of {trials} Alarms delivered, then one OK each; '
             f"{sum(g['oks_sent_or_queued_by_the_interrupted_run'] for g in greens)} OKs from interrupted runs"]]


def interrupted_section(section: dict) -> list[str]:
    """Section 8 of the page, from the figures of test_interrupted.py (nothing if it did not run)."""
    cases = [(label, section[name]) for name, label in INTERRUPTIONS.items() if name in section]
    if not cases:
        return []
    out = ['\n## 8. Interrupted runs\n', (
        'A play runs on web1 and web2: web1 fails at once, web2 goes on into a 60 s task, and while it is in it the run is '
        'ended (the abort comes in the next play instead). The callback keeps `flush_timeout` at 10 s. Ctrl-C must end '
        'ansible-playbook with 99, its Alarm delivered before it exits or within `flush_timeout` after; SIGTERM and '
        'SIGKILL to ansible-playbook alone must leave the Alarm delivered within 10 s of the signal, without waiting '
        'for the worker still in the long task; when every process of the controller is killed at one instant, the '
        'next run with the callback, of another playbook, must deliver it. Each Alarm must name web1, no OK may come '
        'from the interrupted run, and a full green run after it must send exactly one OK.\n'
    )]
    rows = []
    for label, figures in cases:
        how = ', '.join(f'{count} {path}' for path, count in sorted(figures['paths'].items()))
        longest = figures.get('seconds_to_alarm_max')
        rows.append([label, figures['trials'], figures['alarms_delivered'], how,
                     ', '.join(str(rc) for rc in figures['exit_codes']),
                     '-' if longest is None else f'{longest:.1f} s', figures['one_ok_after_green_run']])
    out.append(table(['how the run ended', 'trials', 'Alarms delivered', 'delivered', 'exit code', 'signal to Alarm, longest',
                      'one OK after a green run'], rows))
    greens = [(label, section[name]) for name, label in GREEN_INTERRUPTIONS.items() if name in section]
    if greens:
        out.append('\nA green run of the same play, stopped while both hosts were in the long task and its Alarm was open:\n')
        out.append(table(['stopped by', 'trials', 'OKs sent or queued by the stopped run', 'one OK after a full green run'],
                         [[label, g['trials'], g['oks_sent_or_queued_by_the_interrupted_run'], g['one_ok_after_green_run']]
                          for label, g in greens]))
    out.append(
        '\nBefore item 3 of issue 10 the callback queued a play\'s Alarm only when the play ended and everything else '
        'at the end of the run, so none of these runs delivered its Alarm, then or ever after: the failure was lost.\n'
    )
    return out


# The cases of test_pg_ledger.py that meet a server that cannot be used or is slow, in the order the page lists them.
PG_UNREACHABLE = {
    'unreachable_refused': 'refusing connections (stopped for the whole run)',
    'unreachable_silent': 'accepting connections and never answering',
}
PG_SLOW = {
    'statement_timeout': ('a statement over `statement_timeout` (a trigger that sleeps on every claim)', '10 s'),
    'lock_timeout': ('a lock held past `lock_timeout` (ACCESS EXCLUSIVE on `temperstack.alerts` through the run)', '5 s'),
    'frozen_server': ('every process of the server stopped (SIGSTOP) between two items', '40 s (10 + 5 + 25)'),
}
PG_LOCKED_CALLBACK = {
    'lock_timeout_callback': 'pruned earlier that day: the lock meets the run\'s own writes',
    'lock_timeout_callback_prune_due': 'the daily prune due (a new ledger\'s first run): the lock meets the prune',
}
PG_RESTARTS = {'restarted_during_a_send': 'while an item\'s request was at Temperstack', 'restarted_between_items': 'between two items'}


def seconds(value: object) -> str:
    return '-' if value is None else f'{value:.1f} s'


def pg_ledger_rows(section: dict) -> list[list[object]]:
    """The summary row of test_pg_ledger.py, if it ran."""
    if not section:
        return []
    tried, results = [], []
    stopped = section.get('stopped', [])
    if stopped:
        tried.append(f'server stopped in {len(stopped)} loop(s) of {stopped[0]["items"]} alert tasks')
        results.append(f"{sum(r['items'] for r in stopped)} of {sum(r['items'] for r in stopped)} items sent")
    restarts = [name for name in PG_RESTARTS if name in section]
    if restarts:
        tried.append('restarted mid-run (' + ', '.join(PG_RESTARTS[name] for name in restarts) + ')')
        results.append('reconnected without a warning')
    slow = [name for name in PG_SLOW if name in section]
    if slow or any(name in section for name in PG_UNREACHABLE):
        tried.append('refusing, silent, slow, locked or frozen')
        results.append('alerts still sent within the documented bounds')
    if 'killed_holder' in section:
        tried.append('a claim holder killed with SIGKILL')
        results.append(f"taken over in {section['killed_holder']['same_host_takeover_seconds']:.1f} s on the same machine")
    controllers = section.get('three_controllers', [])
    if controllers:
        tried.append(f"3 controllers x {controllers[0]['forks']} forks at once")
        results.append(f"most copies of one alert: {max(step['most_copies_of_one_alert'] for step in controllers)}")
    callbacks = section.get('three_callbacks')
    if callbacks:
        tried.append(f"3 controllers failing one play at once ({callbacks['rounds']} rounds)")
        results.append(f"Alarms per round: {', '.join(str(n) for n in callbacks['alarms_per_round'])}")
    return [['9. shared ledger (PostgreSQL)', '; '.join(tried), '; '.join(results)]]


def pg_ledger_section(section: dict) -> list[str]:  # pylint: disable=too-many-locals
    """Section 9 of the page, from the figures of test_pg_ledger.py (nothing if it did not run)."""
    if not section:
        return []
    out = ['\n## 9. The shared ledger (PostgreSQL) when its server fails\n', (
        'Real `ansible-playbook` runs with `ledger_url` set, against a PostgreSQL server of the suite\'s own '
        '(`tools/pg_server.sh`: on 127.0.0.1, scram-sha-256), which the tests stop, restart, slow down, lock and freeze. '
        'Each test has a database of its own, and every run an empty HOME of its own, as every AWX job has; "the next run '
        'on that machine" is a run with the HOME of the one before. docs/fleet.md promises these bounds: 5 s to connect, '
        '10 s for a statement, 5 s for a lock. A loop item\'s time is from the end of the item before (the first: from '
        'the start of the task), as a callback sees it.\n'
    )]
    stopped = section.get('stopped', [])
    if stopped:
        out.append(
            '\n### The server stopped in the middle of a loop\n\nA loop of alert tasks, each request answered after 100 ms; '
            'after a few items the server is stopped (`pg_ctl stop -m fast`). Every item must be sent and the run must not '
            'fail; items decided after the stop must warn that the ledger at the masked URL is unreachable (and are '
            'remembered in the fallback file). Then the server is started, the next run on that machine moves the fallback '
            'file into the shared ledger, and a run from another machine must send nothing.\n'
        )
        out.append(table(
            ['round', 'items', 'decided by the shared ledger', 'sent with the warning', 'sent, not recorded', 'slowest item',
             'sent again by the next run', 'sent by another machine'],
            [[number, r['items'], r['decided_by_the_shared_ledger'], r['sent_with_the_warning'], r['sent_but_unrecorded'],
              seconds(r['slowest_item_seconds']), r['sent_again_by_the_next_run'], r['sent_by_a_run_from_another_machine']]
             for number, r in enumerate(stopped, 1)]))
    restarts = [(label, section[name]) for name, label in PG_RESTARTS.items() if name in section]
    if restarts:
        out.append(
            '\n### The server restarted in the middle of a loop\n\n`pg_ctl restart -m fast` while one item\'s request was '
            'held at Temperstack for 5 s (so that the item took its claim before the restart and records its send after it), '
            'or during a 5 s pause between two items. The connection must be opened again, transparently: no item may warn, '
            'every alert must be in the shared ledger, and a second identical run from another machine must send nothing.\n'
        )
        out.append(table(['restarted', 'items', 'restart took', 'warnings', 'slowest item (with the 5 s hold)',
                          'sent by a second identical run'],
                         [[label, r['items'], seconds(r['restart_seconds']), 0, seconds(r['slowest_item_seconds']),
                           r['sent_by_a_second_identical_run']] for label, r in restarts]))
    unreachable = [(label, section[name]) for name, label in PG_UNREACHABLE.items() if name in section]
    if unreachable:
        out.append(
            '\n### A server that cannot be reached for a whole run\n\nModule items must still be sent, with the warning. '
            'With the callback (`flush_timeout` 10 s), a failing play must still raise its Alarm, and a green run must send '
            'no OK and say why; neither run may take longer than the same run with the server answering plus two connect '
            'timeouts. Then, with the server answering, the next green run on that machine must send the OK.\n'
        )
        out.append(table(['server', 'module items sent with the warning', 'slowest item', 'failing run (Alarm sent)',
                          'green run (no OK)', 'green run, server answering (OK sent)'],
                         [[label, f"{r['module_items_sent']} of {r['module_items']}" if r['module_items'] else '-',
                           seconds(r['slowest_item_seconds']), seconds(r['failing_run_seconds']), seconds(r['green_run_seconds']),
                           seconds(r['reachable_run_seconds'])] for label, r in unreachable]))
    slow = [(name, *PG_SLOW[name]) for name in PG_SLOW if name in section]
    if slow or any(name in section for name in PG_LOCKED_CALLBACK):
        out.append(
            '\n### A server that does not answer in time\n\nIssue 11 asks that an alert still goes out when the ledger '
            'cannot be used. A server that takes longer than its bound is treated as unreachable: the item must be sent, '
            'must not fail, and must take no longer than the bound (plus 5 s of slack for the machine).\n'
        )
        if slow:
            out.append(table(['fault', 'items sent', 'items failed', 'slowest item', 'bound', 'what the task said'],
                             [[label, f"{section[name]['items_sent']} of {section[name]['items']}", section[name]['items_failed'],
                               seconds(section[name]['slowest_item_seconds']), bound,
                               trimmed('; '.join(section[name]['what_the_task_said']), 300)] for name, label, bound in slow]))
        callbacks = [(label, section[name]) for name, label in PG_LOCKED_CALLBACK.items() if name in section]
        if callbacks:
            out.append('\nWith the same lock held through a run with the callback, a failing play must still raise its Alarm:\n')
            out.append(table(['', 'Alarms sent (one is due)', 'run', 'what the run said'],
                             [[label, r['alarms_sent'], seconds(r['run_seconds']), trimmed(' '.join(r['warnings']), 300)]
                              for label, r in callbacks]))
    holder = section.get('killed_holder')
    if holder:
        out.append(
            '\n### A controller killed while it holds an alert\n\nA module task\'s request hangs at Temperstack, so its '
            'worker holds the alert\'s claim in the shared ledger; the run is killed with SIGKILL, every process at once. '
            'Another controller on the same machine must take the claim over at once (its holder is gone). A claim whose '
            'holder is on another machine (`otherhost:123`, written with SQL) cannot be seen to be dead: it must be waited '
            'for to the end of its lease, and no longer.\n'
        )
        out.append(table(['', ''], [
            ['lease of the killed holder\'s claim', f"{holder['dead_holder_lease_seconds']} s"],
            ['same machine: the next run\'s item took', seconds(holder['same_host_takeover_seconds'])],
            ['another machine\'s claim: lease left when written', seconds(holder['foreign_lease_seconds'])],
            ['another machine\'s claim: sent after its expiry', f"{holder['foreign_sent_seconds_after_expiry']:.2f} s"],
        ]))
    controllers = section.get('three_controllers', [])
    if controllers:
        first = controllers[0]
        out.append(
            f"\n### Three controllers at once\n\nThree `ansible-playbook` runs, each with its own HOME, {first['forks']} "
            f"hosts and `forks: {first['forks']}`, wait at a gate and then decide at the same moment (the stand-in answers "
            f"each request after 500 ms). Per host, every controller states the same alert, and one of its own; every host "
            f"of every controller also states one shared alert: {first['identical_alerts']} identical alerts and "
            f"{first['distinct_alerts']} distinct ones. Each must reach Temperstack exactly once, and the distinct ones in "
            'parallel (their requests spread over at most half the time they would take one after another).\n'
        )
        out.append(table(['run', 'decisions', 'requests', 'most copies of one alert', 'distinct alerts: spread / one after another',
                          'most at once', 'slowest decision', 'longest run'],
                         [[step['step'], step['decisions'], step['requests'], step['most_copies_of_one_alert'],
                           f"{seconds(step['distinct_span_seconds'])} / {seconds(step['distinct_serial_seconds'])}"
                           if 'distinct_span_seconds' in step else '-',
                           step['peak_concurrent_requests'], seconds(step['slowest_decision_seconds']), seconds(step['wall_seconds'])]
                          for step in controllers]))
    callbacks = section.get('three_callbacks')
    if callbacks:
        counts = callbacks['alarms_per_round']
        out.append(
            f"\nWith the callback, three runs whose same play fails at the same moment (after the gate) must raise one "
            f"Alarm. In {callbacks['rounds']} rounds Temperstack received "
            f"{', '.join(f'{counts.count(n)} round(s) {n} Alarm(s)' for n in sorted(set(counts)))}.\n"
        )
    return out


# The cases of test_ledger_outage.py, in the order the page lists them, with what each must show.
LEDGER_OUTAGE = {
    'restart_past_lease': ('a play fails, the server restarts, the play outlasts its hold lease', 'the play\'s Alarm once'),
    'sqlite_past_lease': ('the same with the embedded SQLite ledger', 'the play\'s Alarm once'),
    'outage_then_green': ('a failing run with the server down, then two green runs on that controller',
                          'Alarm, then the OK from the first green run, nothing after'),
    'silence': ('a silence set with the server up, then an Alarm it covers during an outage', 'nothing: withheld'),
    'damping': ('failures_before_alarm: 2 during an outage', 'nothing at the first failure, the Alarm at the second'),
    'mid_run_holds_back-after-the-run': (
        'a hold written before the server was lost mid-run; a green run; a run past the lease',
        'Alarm, OK, and no Alarm after the OK',
    ),
    'mid_run_holds_back-before-the-run-ends': ('the same, the server back before the failing run ends', 'Alarm, OK'),
    'connections': ('a callback run and module tasks', 'no connection of the collection left after the run'),
    'awx_job': ('an AWX job (its HOME thrown away) fails in an outage; the server is back before it ends',
                'the Alarm known open in PostgreSQL; the next job sends the OK'),
    'move_while_sending': ('a delivery process sends from the fallback file while the next run moves it in', 'Alarm, OK'),
}


def ledger_outage_rows(section: dict) -> list[list[object]]:
    if not section:
        return []
    forms = [name for name in section if name.startswith('odd_url_')]
    leaks = sum(bool(section[name].get('password_in')) for name in forms)
    return [['10. shared ledger outages', f"{len([n for n in LEDGER_OUTAGE if n in section])} outage stories, "
             f"{len(forms)} malformed ledger_url forms at -vvv",
             f"what each story received is in section 10; the password was in {leaks} of {len(forms)} runs' output"]]


def _received(figures: dict) -> str:
    """What the stand-in had received at the end of the story."""
    got = next((figures[name] for name in ('received_after_the_next_job', 'received_after_each_green_run', 'received')
                if name in figures), None)
    if isinstance(got, list):
        got = got[-1] if got else {}
    if not isinstance(got, dict):
        return '-'
    return '; '.join(f"{alert_id}: {', '.join(statuses)}" for alert_id, statuses in sorted(got.items())) or 'nothing'


def ledger_outage_section(section: dict) -> list[str]:
    if not section:
        return []
    out = ['\n## 10. The shared ledger through an outage\n']
    out.append(
        'Real `ansible-playbook` runs against the suite\'s PostgreSQL server, stopped and started with `pg_ctl` '
        '(tests/faults/test_ledger_outage.py). Holds are shortened to a few seconds for these runs '
        '(`_TEMPERSTACK_TEST_HOLD_LEASE_SECONDS`) so that a play can outlast them. "Received" is what the Temperstack '
        'stand-in got, per alert, in order.\n'
    )
    rows = [[label, must, _received(section[name]), seconds(section[name].get('test_seconds'))]
            for name, (label, must) in LEDGER_OUTAGE.items() if name in section]
    out.append(table(['story', 'must show', 'received', 'test time'], rows))
    forms = sorted(name for name in section if name.startswith('odd_url_'))
    if forms:
        out.append(
            '\nA `ledger_url` that libpq cannot parse, or parses into a server that is not there, in a module task and '
            'in the callback, at `-vvv`: the password must be nowhere in what the run prints or writes.\n'
        )
        out.append(table(['form', 'to libpq', 'password found in'], [
            [name[len('odd_url_'):].replace('-', ' '), section[name].get('kind'),
             ', '.join(section[name].get('password_in') or []) or 'nowhere'] for name in forms]))
    return out


def render(data: dict) -> str:  # pylint: disable=too-many-locals,too-many-statements
    machine, sections, outcome = data['machine'], data['sections'], data['outcome']
    out = []
    out.append('# Reliability: faults, crashes, concurrency, bad input, secrets and load\n')
    out.append(
        'What the collection does when things go wrong, measured. Every number on this page comes from one run of '
        f"the fault suite (`tests/faults`, the {'long' if data['profile'] == 'full' else 'short'} variant) and was "
        'written here by `tools/reliability_report.py`; do not edit it by hand. `make test` runs the short variant '
        'of the same tests (fewer trials, cases and alerts) on every change, so each guarantee below is a test that '
        'fails if it breaks.\n'
    )
    out.append('## The run\n')
    out.append(table(['', ''], [
        ['date', machine['date']],
        ['revision', machine.get('revision') or '(not recorded)'],
        ['machine', f"{machine['os']}, {machine['cpu']}, {machine['cores']} cores, {machine['memory']}"],
        ['software', f"Python {machine['python']}, ansible-core {machine['ansible_core']}, SQLite {machine['sqlite']}, "
                     f"{machine['openssl']}, Hypothesis {machine['hypothesis']}"],
        ['profile', data['profile']],
        ['result', f"{outcome.get('passed', 0)} tests passed, {outcome.get('failed', 0)} failed, "
                   f"{outcome.get('skipped', 0)} skipped in {outcome.get('seconds')} s"],
    ]))
    out.append(
        '\nReproduce it with `make faults` (about 25 minutes on this machine; it rewrites this page), or the short '
        'variant with `make faults-quick` (about 2 minutes). Both run from a staged copy of the collection against the '
        'Temperstack stand-in on 127.0.0.1 (`tests/stand_in`), with real `ansible-playbook` runs; nothing leaves the '
        'machine. `FAULTS_WORK=/some/dir` keeps the work directory elsewhere, `FAULTS_ARGS=\'-k crash\'` picks tests.\n'
    )

    summary = []
    matrix = sections.get('matrix', {})
    if matrix:
        summary.append(['1. faults', f"{len(matrix.get('module', []))} faults for the module, {len(matrix.get('callback', []))} "
                        'for the callback, each a story of a faulty run and a healthy one',
                        'every Alarm and OK reached Temperstack, in order, once; HTTP 400 dropped by design'])
    crash = sections.get('crash', {})
    if crash:
        summary.append(['2. crashes', f"{crash['trials']} runs killed with SIGKILL at random points",
                        f"ledger always opened; stories completed; {crash['duplicate_sends']} duplicate sends (at least once)"])
    concurrency = sections.get('concurrency', {})
    if concurrency:
        summary.append(['3. concurrency', f"{concurrency['forks']} forks, one ledger, {len(concurrency['rounds'])} round(s) of raise/repeat/resolve",
                        'no lost update, the shared alert sent once per change, no "database is locked"'])
    fuzz = sections.get('fuzz', {})
    if fuzz:
        cases = sum(fuzz.get(name, {}).get('cases', 0) for name in ('module', 'callback_settings', 'task_errors'))
        summary.append(['4. bad input', f'{cases} generated cases (Hypothesis)', 'valid payload or an error naming the option; no traceback'])
    scan = sections.get('leak_scan', {})
    if scan:
        summary.append(['5. secrets', f"{scan['files']} files ({scan['bytes'] / 1e6:.1f} MB) from {scan['ansible_playbook_runs']} runs at -vvvv, "
                        f"{scan['requests_checked']} requests", 'the key only in the request path'])
    load = sections.get('load', {})
    if load:
        summary.append(['6. load', f"{load['alerts']} Alarms from one run, {int(load['latency_seconds'] * 1000)} ms per request",
                        f"all delivered in {load['delivery_seconds']} s (flush_timeout {load['flush_timeout']:g} s); memory flat"])
    order = sections.get('outbox_order', {})
    # The variants of test_outbox_order.py: callback runs alone, then with a run of module tasks among them.
    order_variants = [order[name] for name in ('callback', 'callback_and_module') if name in order]
    if order_variants:
        tried = ', '.join(f"{v['rounds']} rounds of {senders(v)}" for v in order_variants)
        summary.append(['7. senders at once', f'{tried}, starting at once over an outbox holding each alert\'s Alarm then its OK '
                        f"({sum(v['alerts'] for v in order_variants)} alerts)",
                        f"{sum(v['out_of_order'] for v in order_variants)} Alarms after their OK, "
                        f"{sum(v['duplicates'] for v in order_variants)} duplicates; outbox empty, every alert on record as OK"])
    summary += interrupted_rows(sections.get('interrupted', {}))
    summary += pg_ledger_rows(sections.get('pg_ledger', {}))
    summary += ledger_outage_rows(sections.get('ledger_outage', {}))
    out.append('\n## Summary\n')
    out.append(table(['item', 'what was tried', 'result'], summary))

    if matrix:
        out.append('\n## 1. Fault matrix\n')
        out.append(
            'Each fault is a story at one endpoint. The first run meets the fault; a follow-up run finds the same URL '
            'healthy (the stand-in started on the refused port, a valid certificate on the TLS port, an HTTP proxy that '
            'reaches the name that does not resolve). The module raises an alert (`retries: 2`, `timeout: 1`), then the '
            'follow-up raises it again and resolves it. The callback runs a failing play, then a green one '
            '(`TEMPERSTACK_RETRIES=2`, `TEMPERSTACK_TIMEOUT=1`, `TEMPERSTACK_FLUSH_TIMEOUT=10`). "Attempts" are the '
            'requests of the first run; "time" is that run\'s wall time, and "+" what it took beyond the same run '
            f"against a healthy endpoint ({matrix.get('module_baseline_seconds')} s for the module, "
            f"{matrix.get('callback_baseline_seconds')} s for the callback). \"In the end\" is what Temperstack had "
            'received, in order, once both runs were over.\n'
        )
        for surface in ('module', 'callback'):
            rows = []
            for row in matrix.get(surface, []):
                rows.append([row['fault'], row['outcome'], row['attempts'], f"{row['seconds']:.1f} s (+{row['extra_seconds']:.1f})",
                             ', '.join(row['delivered_in_the_end']) or 'nothing', trimmed(row['message']) or '-'])
            out.append(f'\n### {"The alert module" if surface == "module" else "The playbook_alerts callback"}\n')
            out.append(table(['fault', 'outcome', 'attempts', 'time', 'in the end', 'message'], rows))
        out.append(
            '\nThe callback never changed an exit code (2 for the failing run, 0 for the green one in every case) and no '
            'task waited on Temperstack: its first run took at most about `timeout` x attempts beyond a healthy one, far '
            'inside `flush_timeout`. HTTP 400 is the one alert that is not kept: Temperstack refuses that body and would '
            'refuse it every time, so the callback drops it with a warning instead of letting it block every later alert '
            '(the module fails the task, and its ledger is unchanged, so the next run sends again).\n'
        )

    if crash:
        out.append('\n## 2. Crash safety\n')
        out.append(
            f"{crash['trials']} trials. Each starts a run in which two of three plays fail (the stand-in answers every "
            f"request after 150 ms, so deliveries are in flight), and kills it with SIGKILL at a random moment of its "
            f"life (an undisturbed run takes {crash['run_seconds']} s). Half the time only ansible-playbook dies (its "
            'delivery process lives on, as when a terminal is closed), half the time every process it started dies with '
            'it. Then the ledger is opened (SQLite integrity check, and by the collection, which must not warn), and the '
            'same failing run and a green run follow. Every trial must end with Temperstack holding, per alert, the Alarm '
            'and then the OK: an OK never first, an Alarm at most twice, the OK exactly once.\n'
        )
        rows = [[name, count] for name, count in sorted(crash['kills'].items()) if name != 'trials']
        rows += [[f'killed during: {name}', count] for name, count in sorted(crash['phases'].items())]
        rows += [['duplicate sends (a 200 whose record the kill prevented, sent again)', crash['duplicate_sends']]]
        out.append(table(['', 'trials'], rows))
        out.append('\nEvery trial passed: the ledger always opened, with no warning and no traceback, and every story completed.\n')

    if concurrency:
        out.append('\n## 3. Concurrency\n')
        out.append(
            f"One run of {concurrency['forks']} hosts with `forks: {concurrency['forks']}` through one ledger, the stand-in "
            'answering each request after 300 ms so that the forks overlap. Every host raises an alert of its own and the '
            'same shared alert (same `alert_id`, same payload); then the same run again; then every alert is resolved.\n'
        )
        rows = []
        for number, rounds in enumerate(concurrency['rounds'], 1):
            for step in ('raise', 'repeat', 'resolve'):
                figures = rounds[step]
                rows.append([number, step, figures['requests'], figures['peak_concurrent_requests'], f"{figures['seconds']:.1f} s"])
        out.append(table(['round', 'run', 'requests at Temperstack', 'most at once', 'time'], rows))
        out.append(
            f"\nEach raise and resolve sent exactly {concurrency['forks'] + 1} requests: one per host's own alert and one, "
            'from a single fork, for the shared alert; the ledger then held all of them (no lost update); the repeat sent '
            'nothing; no task failed and no output mentioned a locked database.\n'
        )

    if fuzz:
        out.append('\n## 4. Bad input (Hypothesis)\n')
        out.append(
            'Each generated input must yield a request whose body the stand-in accepts (its own contract check, run on '
            'every body) or a clear error that names the option: never a traceback, never a request with an invalid '
            'body, never the key in a message. Values: unicode of every plane, lone surrogates, control characters, '
            'strings of up to 70,000 characters, numbers (NaN, infinities, 10^30), booleans, lists and dictionaries '
            'nested, bytes, and template-looking strings.\n'
        )
        rows = []
        labels = {
            'module': 'the alert module: every option, through the action plugin\'s own argument handling',
            'callback_settings': 'the callback: its settings, from the environment, through ansible\'s configuration',
            'task_errors': 'the callback: task results of any shape (msg, stderr, loop results, no_log) and names',
        }
        for name, label in labels.items():
            counts = dict(fuzz.get(name, {}))
            if not counts:
                continue
            cases = counts.pop('cases', 0)
            rows.append([label, cases, '; '.join(f'{key}: {value}' for key, value in sorted(counts.items()))])
        out.append(table(['target', 'cases', 'how they ended'], rows))
        errors = fuzz.get('module_errors_by_option')
        if errors:
            out.append('\nThe module\'s errors named: ' + ', '.join(f'`{k}` {v}' for k, v in sorted(errors.items())) + '.\n')
        limits = fuzz.get('limits')
        if limits:
            out.append(
                '\nThe largest alert the module accepts (every field at 65,536 characters of the costliest kind) is still a '
                'valid body: ' + ', '.join(f"{item['char']}: {item['bytes']:,} bytes" for item in limits) + ' (the stand-in '
                'takes up to 4 MiB).\n'
            )

    secrets = sections.get('secrets', {})
    if scan or secrets:
        out.append('\n## 5. Secrets\n')
    if scan:
        out.append(
            f"Every scenario of the suite used one distinctive key and ran ansible-playbook at `-vvvv`. Afterwards "
            f"{scan['files']} files ({scan['bytes']:,} bytes: the output of {scan['ansible_playbook_runs']} runs, every "
            'ledger with its -wal and -shm files, HOME, TMPDIR, ANSIBLE_LOCAL_TEMP and ANSIBLE_REMOTE_TEMP with module '
            'files kept, the stand-ins\' request logs) were searched for the key as text, URL-encoded, JSON-escaped and '
            f"base64: found in {len(scan['files_with_the_key'])} files. Of the {scan['requests_checked']} requests the "
            f"stand-ins recorded, {scan['requests_with_the_key_in_the_path']} carried the key in their path, where "
            f"Temperstack expects it, and {scan['requests_with_the_key_elsewhere']} anywhere else (body, headers).\n"
        )
    if secrets:
        if 'masked_description' in secrets:
            out.append(
                f"\nURL credentials in task errors ({secrets['url_credentials_masked']} kinds: a password in a git URL in "
                'the message and in the task\'s name, an FTP URL, another Temperstack webhook key) are masked before they '
                'reach the Alarm, which read:\n\n```\n' + secrets['masked_description'] + '\n```\n'
            )
        if 'modes_under_umask_000' in secrets:
            out.append('\nUnder `umask 000`, the ledger and the directories the collection made for it:\n\n')
            out.append(table(['path', 'mode'], [[name, bits] for name, bits in secrets['modes_under_umask_000'].items()]))

    if load:
        out.append('\n## 6. Load\n')
        memory = load['memory_kib']
        out.append(
            f"One run fails on {load['alerts']} hosts with `scope: host`, so the callback queues {load['alerts']} Alarms at "
            f"once when the run ends; the stand-in answers every request after {int(load['latency_seconds'] * 1000)} ms; "
            f"the callback keeps its defaults (`flush_timeout` {load['flush_timeout']:g} s).\n"
        )
        out.append(table(['', ''], [
            ['ansible-playbook without the callback', f"{load['run_seconds_without_callback']} s"],
            ['ansible-playbook with the callback', f"{load['run_seconds']} s"],
            ['from the first request to the last', f"{load['delivery_seconds']} s ({load['requests_per_second']} requests/s, "
                                                   f"at most {load['peak_concurrent_requests']} at once)"],
            ['end-of-run wait (first request to exit; bound: flush_timeout + 2 s)', f"{load['end_of_run_wait_seconds']} s"],
            ['delivered', f"{load['alerts']} of {load['alerts']}, each once; outbox empty"],
            ['delivery process memory while sending (after the first quarter)',
             f"{memory['delivery process: while sending, least'] / 1024:.1f} to "
             f"{memory['delivery process: while sending, most'] / 1024:.1f} MiB (peak {(memory['delivery process: peak (VmHWM)'] or 0) / 1024:.1f} MiB)"],
            ['ansible-playbook memory while sending', f"{memory['ansible-playbook: while sending, least'] / 1024:.1f} to "
             f"{memory['ansible-playbook: while sending, most'] / 1024:.1f} MiB (peak {(memory['ansible-playbook: peak (VmHWM)'] or 0) / 1024:.1f} MiB)"],
        ]))
        series = load.get('delivery_memory_series_kib')
        if series:
            out.append('\nDelivery process memory around the storm (seconds from the first request: MiB): '
                       + ', '.join(f'{when:g}: {rss / 1024:.1f}' for when, rss in series) + '.\n')
        out.append(
            '\nBefore this issue the delivery process sent one request at a time: 2,000 requests at 100 ms need 200 s, '
            'far beyond the 30 s flush_timeout, so most of such a storm waited for the next run (defect 10 below).\n'
        )

    if order_variants:
        out.append('\n## 7. Several senders over one outbox\n')
        out.append(
            'Each round starts with a fresh ledger. While the stand-in answers 503, a play on one host (odd rounds) or three '
            '(even rounds) fails and then runs green (`TEMPERSTACK_SCOPE=host`: an alert per host), so the outbox holds, for '
            'each alert, its Alarm and then its OK. Then the stand-in comes back, answering '
            'each request after 100, 200 or 300 ms (by round) so that deliveries overlap, and '
            f"{order_variants[0]['callback_runs']} `ansible-playbook` runs with the callback start at once, of a green playbook "
            'that adds nothing of its own: each run\'s delivery process finds the whole outbox waiting, as parallel CI or AWX '
            'jobs do after an outage. In the second variant one more run starts with them, whose `alert` tasks raise each '
            'alert\'s OK, and so deliver that alert\'s queued entries inline first. Temperstack must receive, for every alert, '
            'exactly one Alarm and then exactly one OK; the outbox must be empty and the ledger must record every alert as OK.\n'
        )
        rows = []
        for figures in order_variants:
            rows.append([senders(figures), figures['rounds'], figures['alerts'], figures['requests'],
                         figures['out_of_order'], figures['duplicates'], figures['peak_concurrent_requests']])
        out.append(table(['senders', 'rounds', 'alerts', 'requests at Temperstack', 'Alarms after their OK', 'duplicates',
                          'most at once'], rows))
        out.append(
            '\nNo sender died in the middle of a request, the one case in which a duplicate is allowed, so every '
            'duplicate is a defect, as is every Alarm after its OK. Before item 5 of issue 10 every delivery process sent '
            'the whole outbox as it found it, and a module task sent its alert\'s entries without regard to them: on that '
            'code 38 of the 40 rounds of the long run failed, with 53 Alarms delivered after their OK and 441 duplicates, and '
            'with four callback runs one alert received Alarm, Alarm, Alarm, OK, Alarm, OK, OK, OK, the sequence the issue '
            'reported. Now each alert\'s entries are sent under its claim in the ledger, '
            'one sender at a time.\n'
        )

    out += interrupted_section(sections.get('interrupted', {}))
    out += pg_ledger_section(sections.get('pg_ledger', {}))
    out += ledger_outage_section(sections.get('ledger_outage', {}))
    out.append('\n' + FIXED)
    return '\n'.join(part.rstrip('\n') + '\n' for part in out).replace('\n\n\n', '\n\n')


if __name__ == '__main__':
    sys.exit(main(sys.argv))
