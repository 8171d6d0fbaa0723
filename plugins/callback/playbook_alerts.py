# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: playbook_alerts
type: notification
short_description: Raise a Temperstack alert when a play fails, resolve it when a later run recovers
version_added: 1.0.0
description:
  - Enabled once, this callback raises a Temperstack V(Alarm) when a unit of a playbook run fails and sends
    V(OK) for that alert when a later run of the same unit runs to its end without failure. Ordinary green
    runs send nothing, and a unit that fails the same way again is not re-sent.
  - A unit is a play of a playbook (O(scope=play)), a host in a playbook (O(scope=host)), or a whole
    playbook (O(scope=playbook)).
  - A unit has failed when Ansible counts a failure or an unreachable host in it, as the play recap does.
    Failures that were ignored (C(ignore_errors), C(failed_when)) or rescued (C(block)/C(rescue)) do not count;
    failed handlers and unreachable hosts do.
  - "The alert id of a unit is stable across runs and controllers: O(alert_id_prefix), the playbook's file name,
    the play's name (Ansible names an unnamed play after its C(hosts) pattern) and the host, as far as the scope
    has them, as a slug followed by a 12-character hash, at most 128 characters. For example
    V(ansible-site-yml-deploy-web-tier-5d41402abc4b). Plays of one playbook with the same name share one alert,
    so give plays distinct names."
  - The alert describes the failure without opening Ansible, deterministically (no timestamps or run ids), so
    the same failure on a later run is recognised and not re-sent, while a different failure updates the alert.
    Only the error messages of failed tasks are sent; task arguments never are, results of C(no_log) tasks are
    replaced by a placeholder, and credentials embedded in URLs are masked.
  - "Narrowed runs never resolve what they did not check: a run with C(--tags), C(--skip-tags),
    C(--start-at-task) or C(--step) sends no V(OK); under C(--limit) an V(OK) is sent only when every host named in
    the open V(Alarm) ran and succeeded; a unit cut short (C(meta: end_play), C(meta: end_host), a run
    interrupted by Ctrl-C or SIGTERM) sends no V(OK)."
  - Check-mode runs (C(--check)) send nothing unless O(check_mode_alerts=true).
  - Never blocks and never fails the playbook. Alerts are written to the outbox of the ledger and delivered by a
    separate process, so no task waits on Temperstack. When more than 16 alerts wait, it sends up to 16 at once;
    the V(Alarm) and the V(OK) of one alert always go one after the other, in the order they were raised. At the
    end of the run the callback waits at most O(flush_timeout) seconds for pending deliveries, then prints one line saying what was sent or queued, and a
    warning if delivery failed. What was not delivered stays in the outbox and is delivered first, oldest first,
    by the next run with the same endpoint, so an V(OK) never reaches Temperstack before its V(Alarm).
  - Without a configured endpoint the callback disables itself with one warning.
author:
  - Temperstack alerting maintainers (@temperstack)
requirements:
  - Enable it in C(ansible.cfg) (C(callbacks_enabled = temperstack.alerting.playbook_alerts) under C([defaults]))
    or with E(ANSIBLE_CALLBACKS_ENABLED=temperstack.alerting.playbook_alerts).
extends_documentation_fragment:
  - temperstack.alerting.connection.callback
options:
  scope:
    description:
      - What one alert is about.
      - V(play), one alert per playbook and play.
      - V(host), one alert per playbook and host.
      - V(playbook), one alert per playbook.
    type: str
    default: play
    choices: [play, host, playbook]
    env:
      - name: TEMPERSTACK_SCOPE
    ini:
      - section: callback_temperstack
        key: scope
  alert_priority:
    description:
      - The priority of the alerts.
    type: str
    default: Critical
    choices: [Critical, Medium]
    env:
      - name: TEMPERSTACK_ALERT_PRIORITY
    ini:
      - section: callback_temperstack
        key: alert_priority
  run_book_url:
    description:
      - The URL of the runbook on-call engineers should follow.
    type: str
    env:
      - name: TEMPERSTACK_RUN_BOOK_URL
    ini:
      - section: callback_temperstack
        key: run_book_url
  alert_url:
    description:
      - A URL to send with the alerts.
      - When not set and the run happens in AWX or Automation Controller (E(AWX_HOST) and E(JOB_ID) set),
        the URL of the job's output.
    type: str
    env:
      - name: TEMPERSTACK_ALERT_URL
    ini:
      - section: callback_temperstack
        key: alert_url
  resource_type:
    description:
      - The C(resource_type) of the alerts. Defaults to V(ansible-play), V(host) or V(ansible-playbook) by O(scope).
    type: str
    env:
      - name: TEMPERSTACK_RESOURCE_TYPE
    ini:
      - section: callback_temperstack
        key: resource_type
  alert_id_prefix:
    description:
      - The first part of every alert id, to keep the alerts of several teams or environments apart.
    type: str
    default: ansible
    env:
      - name: TEMPERSTACK_ALERT_ID_PREFIX
    ini:
      - section: callback_temperstack
        key: alert_id_prefix
  check_mode_alerts:
    description:
      - Send alerts for runs in check mode too.
    type: bool
    default: false
    env:
      - name: TEMPERSTACK_CHECK_MODE_ALERTS
    ini:
      - section: callback_temperstack
        key: check_mode_alerts
  flush_timeout:
    description:
      - The longest time, in seconds, the end of the run waits for pending deliveries, from 0 to 3600.
        What is not delivered by then stays queued for the next run.
    type: float
    default: 30
    env:
      - name: TEMPERSTACK_FLUSH_TIMEOUT
    ini:
      - section: callback_temperstack
        key: flush_timeout
  max_error_chars:
    description:
      - The longest error message of a failed task quoted in an alert's description; longer ones are cut.
        At least 1.
    type: int
    default: 300
    env:
      - name: TEMPERSTACK_MAX_ERROR_CHARS
    ini:
      - section: callback_temperstack
        key: max_error_chars
notes:
  - The ledger is per controller. In AWX or Automation Controller, whose job files do not persist, point
    O(ledger_path) at persistent storage, or expect each job to start without memory of earlier jobs (it then
    raises an Alarm again for a failing unit, and cannot send the OK for an Alarm raised by another job).
seealso:
  - module: temperstack.alerting.alert
"""

import os
import typing as t

from ansible import context
from ansible.plugins.callback import CallbackBase

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import (
    STATUS_ALARM,
    AlertValidationError,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import (
    MAX_TIMEOUT,
    TemperstackClient,
    check_ca_path,
    check_retries,
    check_timeout,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._dispatch import is_news
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import (
    CONNECTION_OPTIONS,
    EndpointError,
    resolve_endpoint,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import Ledger, LedgerError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._outbox_sender import SenderProcess
from ansible_collections.temperstack.alerting.plugins.plugin_utils._run_units import (
    NO_LOG_MESSAGE,
    AlertSettings,
    RunBook,
    alarm_for,
    failed_hosts_of,
    ok_for,
    validate_settings,
)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'temperstack.alerting.playbook_alerts'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: t.Any = None) -> None:
        super().__init__(display=display)
        self._book = RunBook()
        self._playbook = ''
        self._play: t.Any = None
        self._settings = AlertSettings()
        self._ledger: Ledger | None = None
        self._sender: SenderProcess | None = None
        self._endpoint_key = ''
        self._flush_timeout = 30.0
        self._configured = False

    # -- set-up ------------------------------------------------------------------------------------

    def set_options(self, task_keys: t.Any = None, var_options: t.Any = None, direct: t.Any = None) -> None:
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        if self._configured:
            return
        self._configured = True
        try:
            self._configure()
        except (AlertValidationError, EndpointError, LedgerError) as exc:
            self._disable(str(exc))

    def _configure(self) -> None:
        if context.CLIARGS.get('check') and not self.get_option('check_mode_alerts'):
            self.disabled = True
            return
        try:
            endpoint = resolve_endpoint({name: self.get_option(name) for name in CONNECTION_OPTIONS}, environ={})
        except EndpointError as exc:
            if not any(self.get_option(name) for name in CONNECTION_OPTIONS):
                raise EndpointError('no Temperstack endpoint is configured (set TEMPERSTACK_WEBHOOK_URL, or '
                                    'webhook_url in the [callback_temperstack] section of ansible.cfg)') from None
            raise exc
        scope = self.get_option('scope')
        self._settings = AlertSettings(
            scope=scope,
            alert_priority=self.get_option('alert_priority'),
            alert_id_prefix=self.get_option('alert_id_prefix') or 'ansible',
            resource_type=self.get_option('resource_type'),
            run_book_url=self.get_option('run_book_url'),
            alert_url=self.get_option('alert_url') or _awx_job_url(os.environ),
            max_error_chars=self.get_option('max_error_chars'),
        )
        # A bad URL or priority is found now, not when the first Alarm is due.
        validate_settings(self._settings)
        client = TemperstackClient(
            endpoint,
            timeout=check_timeout(self.get_option('timeout')),
            retries=check_retries(self.get_option('retries')),
            validate_certs=self.get_option('validate_certs'),
            ca_path=check_ca_path(self.get_option('ca_path')),
        )
        flush_timeout = _check_flush_timeout(self.get_option('flush_timeout'))
        self._ledger = Ledger(self.get_option('ledger_path'), warn=self._display.warning)
        self._ledger.prune_if_due()
        self._endpoint_key = endpoint.ledger_key
        self._flush_timeout = flush_timeout
        self._sender = SenderProcess(client, self._ledger.path, self._flush_timeout)
        if self._ledger.pending(self._endpoint_key):
            # What earlier runs could not deliver goes first, before this run's own alerts.
            self._sender.notify()

    def _disable(self, reason: str) -> None:
        self.disabled = True
        self._display.warning(f'temperstack.alerting.playbook_alerts is disabled: {reason}')

    # -- what happens in the run -------------------------------------------------------------------

    def v2_playbook_on_start(self, playbook: t.Any) -> None:
        self._playbook = getattr(playbook, '_file_name', '') or ''

    def v2_playbook_on_play_start(self, play: t.Any) -> None:
        self._note_removed_hosts()
        uuid = getattr(play, '_uuid', None)
        same_play = uuid is not None and uuid == getattr(self._play, '_uuid', None)
        self._play = play
        if same_play:
            # Ansible starts a play again for each of its serial batches; it is still the same unit.
            return
        self._finish_play()
        self._book.start_play(self._playbook, play.name or '')

    def _note_removed_hosts(self) -> None:
        # Ansible takes a host out of the play (what ansible_play_hosts leaves out) when it fails, and when
        # meta end_host/end_play/end_batch, any_errors_fatal or max_fail_percentage stop it early. A host
        # taken out without a failure of its own did not run to the end. A meta task that was skipped by
        # its condition takes no host out, so it does not count.
        removed = set(getattr(self._play, '_removed_hosts', None) or ())
        if removed - {host for play in self._book.plays for host in play.failures}:
            self._book.cut_short()

    def v2_playbook_on_no_hosts_remaining(self) -> None:
        self._book.cut_short()

    def v2_runner_on_ok(self, result: t.Any) -> None:
        self._book.host_ran(_host_name(result))

    def v2_runner_on_skipped(self, result: t.Any) -> None:
        self._book.host_ran(_host_name(result))

    def v2_runner_on_failed(self, result: t.Any, ignore_errors: bool = False) -> None:
        host = _host_name(result)
        # Ansible has already decided, by the time this event arrives, whether a rescue takes the failure
        # over: a rescued host is back among the play's hosts, a failed one is not. This is the same test
        # that decides between 'failed' and 'rescued' in the play recap.
        if ignore_errors or host not in getattr(self._play, '_removed_hosts', (host,)):
            self._book.host_ran(host)
            return
        self._book.host_failed(host, _task_name(result), _error_message(result))

    def v2_runner_on_unreachable(self, result: t.Any) -> None:
        task = _task_of(result)
        host = _host_name(result)
        if getattr(task, 'ignore_unreachable', False):
            self._book.host_ran(host)
            return
        self._book.host_failed(host, _task_name(result), _error_message(result), unreachable=True)

    def v2_playbook_on_stats(self, stats: t.Any) -> None:
        self._note_removed_hosts()
        self._finish_play()
        if self._sender is None:
            return
        if self._settings.scope != 'play':
            self._queue_alarms(self._book.plays)
        if not _narrowed_run():
            self._queue_recoveries()
        self._report(self._sender.flush())

    # -- decisions ---------------------------------------------------------------------------------

    def _finish_play(self) -> None:
        play = self._book.end_play()
        # A play unit is complete when its play ends, so its Alarm goes out at once; host and playbook
        # units span plays and raise theirs at the end of the run, once. Recoveries always wait for the
        # end of the run, because an interrupted run never resolves anything.
        if play is not None and self._settings.scope == 'play':
            self._queue_alarms([play])

    def _queue_alarms(self, plays: t.Sequence[t.Any]) -> None:
        for unit in self._book.units(self._settings.scope, self._settings.alert_id_prefix, plays):
            if unit.failed_hosts:
                self._queue(alarm_for(unit, self._settings), failed_hosts_of(unit))

    def _queue_recoveries(self) -> None:
        limited = bool(context.CLIARGS.get('subset'))
        failed_in_run = {host for play in self._book.plays for host in play.failures}
        for unit in self._book.units(self._settings.scope, self._settings.alert_id_prefix):
            if unit.failed_hosts or not unit.ran_to_end:
                continue
            known = self._ledger.lookup(self._endpoint_key, unit.alert_id) if self._ledger else None
            if known is None or known.status != STATUS_ALARM:
                continue
            # A host of the Alarm that did not run this unit was not checked: left out by --limit, or
            # dropped from the rest of the playbook because it failed in an earlier play.
            unchecked = set(known.hosts) - unit.ran_hosts
            if unchecked and (limited or unchecked & failed_in_run):
                continue
            self._queue(ok_for(unit, self._settings), ())

    def _queue(self, alert: t.Any, hosts: t.Sequence[str]) -> None:
        if self._ledger is None or self._sender is None:
            return
        try:
            if not is_news(alert, self._ledger.lookup(self._endpoint_key, alert.alert_id)):
                return
            self._ledger.queue(self._endpoint_key, alert, hosts)
        except LedgerError as exc:
            self._display.warning(f'temperstack: could not queue {alert.status} for {alert.alert_id}: {exc}')
            return
        self._sender.notify()

    def _report(self, report: t.Any) -> None:
        if report.sent or report.queued:
            parts = [f'{report.sent.count(status)} {status}' for status in ('Alarm', 'OK') if status in report.sent]
            line = 'sent ' + ', '.join(parts) if parts else 'sent nothing'
            if report.queued > 0:
                line += f'; {report.queued} queued for the next run'
            self._display.display(f'Temperstack: {line}')
        for error in report.errors:
            self._display.warning(f'temperstack: {error}')
        if not report.finished:
            self._display.warning(
                f'temperstack: delivery did not finish within flush_timeout ({self._flush_timeout:g} s); '
                'what is left stays queued for the next run'
            )


def _check_flush_timeout(value: t.Any) -> float:
    seconds = float(value)
    if not 0 <= seconds <= MAX_TIMEOUT:  # also false for NaN
        raise AlertValidationError(f'flush_timeout must be between 0 and {MAX_TIMEOUT} seconds, got {value}')
    return seconds


def _narrowed_run() -> bool:
    args = context.CLIARGS
    tags = tuple(args.get('tags') or ())
    return bool(
        (tags and tuple(tags) != ('all',))
        or args.get('skip_tags')
        or args.get('start_at_task')
        or args.get('step')
    )


def _awx_job_url(environ: t.Mapping[str, str]) -> str | None:
    host, job = environ.get('AWX_HOST'), environ.get('JOB_ID')
    if host and job:
        return f'{host.rstrip("/")}/#/jobs/playbook/{job}/output'
    return None


def _task_of(result: t.Any) -> t.Any:
    return getattr(result, 'task', None) or result._task


def _host_name(result: t.Any) -> str:
    host = getattr(result, 'host', None) or result._host
    return host.get_name()


def _task_name(result: t.Any) -> str:
    task = _task_of(result)
    return task.get_name().strip() or task.action


def _error_message(result: t.Any) -> str:
    task = _task_of(result)
    data = getattr(result, 'result', None)
    if data is None:
        data = result._result
    if getattr(task, 'no_log', False) or data.get('_ansible_no_log') or 'censored' in data:
        return NO_LOG_MESSAGE
    message = data.get('msg') or data.get('stderr') or data.get('module_stderr') or ''
    if not message and isinstance(data.get('results'), list):
        failed_items = [item for item in data['results'] if isinstance(item, dict) and item.get('failed')]
        if failed_items:
            return _error_text(failed_items[0])
    return str(message) or 'failed'


def _error_text(item: t.Mapping[str, t.Any]) -> str:
    if item.get('_ansible_no_log') or 'censored' in item:
        return NO_LOG_MESSAGE
    return str(item.get('msg') or item.get('stderr') or 'failed')
