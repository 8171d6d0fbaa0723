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
  - "An V(OK) claims that every host named in the open V(Alarm) ran the unit again, to its end, and succeeded;
    anything less sends no V(OK). The hosts of an open V(Alarm) accumulate until its V(OK): a narrower run
    (C(--limit)) that fails again adds its failed hosts to them and never replaces them."
  - "No V(OK) is sent, then, by a run narrowed with C(--tags), C(--skip-tags), C(--start-at-task) or C(--step);
    nor while a host of the V(Alarm) did not run the unit: left out by C(--limit) or by an inventory change, or
    dropped from the rest of the playbook after failing an earlier play; nor for a play that matched no hosts (an
    empty group, a C(hosts) template that resolved to nothing), or under O(scope=playbook) for its playbook; nor
    for a unit cut short: C(meta: end_play), or a run interrupted by Ctrl-C or SIGTERM."
  - "C(meta: end_host), C(any_errors_fatal) and C(max_fail_percentage) cut a play short only for the hosts they
    take out of it: under O(scope=host) the other hosts still send their V(OK); under O(scope=play) and
    O(scope=playbook) the unit sends none."
  - An V(Alarm) that names a host which has left the inventory for good gets no V(OK) from the callback; resolve
    it in Temperstack.
  - Check-mode runs (C(--check)) send nothing unless O(check_mode_alerts=true).
  - Never blocks and never fails the playbook. Alerts are written to the outbox of the ledger and delivered by a
    separate process, so no task waits on Temperstack. When more than 16 alerts wait, it sends up to 16 at once;
    the V(Alarm) and the V(OK) of one alert always go one after the other, in the order they were raised. At the
    end of the run the callback waits at most O(flush_timeout) seconds for pending deliveries (after 2 seconds of waiting it
    prints one line saying how many alerts it is delivering and for how long at most), then prints one line saying what was sent or queued, and a
    warning if delivery failed. What was not delivered stays in the outbox and is delivered first, oldest first,
    by the next run with the same endpoint, so an V(OK) never reaches Temperstack before its V(Alarm).
    Each alert's entries have one sender at a time, across runs, module tasks and delivery processes that share the
    ledger, so an V(Alarm) is never delivered after its V(OK).
  - A failure Ansible has counted is never lost, however the run ends. It is written to the ledger (held, not sent)
    the moment it is seen, and replaced by its unit's V(Alarm) when the unit ends. If the run ends first, it is
    sent as the V(Alarm) of the failures seen so far - by ansible-playbook within O(flush_timeout) on Ctrl-C or an
    C(ERROR!) that aborts the run, by the delivery process at once when ansible-playbook is killed (SIGTERM,
    SIGKILL), or by the next run with this callback on the same controller when every process of the run was
    killed. Up to 100 failures of one unit are each written when seen; beyond that, a failure storm is written
    at most once a second.
  - The delivery process runs isolated (C(python -I)), so nothing from the working directory, the user's
    site-packages or E(PYTHONPATH) is imported into the process that holds the key, and it gets only the
    environment it needs (E(PATH), E(HOME), locale, proxy and CA bundle variables).
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
  - The ledger file (O(ledger_path)) is per controller. In AWX or Automation Controller, whose job containers
    start empty, and for several controllers, set O(ledger_url) to a PostgreSQL ledger they all share. Without it
    each job starts without memory of earlier jobs, so it raises an Alarm again for a failing unit, and cannot send
    the OK for an Alarm raised by another job.
seealso:
  - module: temperstack.alerting.alert
"""

import atexit
import contextlib
import os
import time
import typing as t
import uuid
import weakref

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
    Endpoint,
    EndpointError,
    configured_integrations,
    resolve_endpoint,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._holder import this_process
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import Ledger, LedgerError, Record
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import LedgerWithFallback, open_ledger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import (
    check_ledger_url,
    fallback_path,
    ledger_spec,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._outbox_sender import SenderProcess
from ansible_collections.temperstack.alerting.plugins.plugin_utils._routing import Router
from ansible_collections.temperstack.alerting.plugins.plugin_utils._silences import silencing
from ansible_collections.temperstack.alerting.plugins.plugin_utils._run_units import (
    NO_LOG_MESSAGE,
    AlertSettings,
    RunBook,
    alarm_for,
    failed_hosts_of,
    hosts_of_open_alarm,
    ok_for,
    recovered_apart,
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
        # With ledger_url: the local file that stands in for the shared ledger while its server is unreachable.
        self._fallback = ''
        self._sender: SenderProcess | None = None
        # The default endpoint's ledger key ('' without one).
        self._endpoint_key = ''
        # Routing: every endpoint this run can alert, and the integration of each failed host.
        self._router = Router(self._display.warning)
        self._loader: t.Any = None
        self._flush_timeout = 30.0
        self._configured = False
        # This run's held failures (see _hold): the token that marks them, and per alert when it last wrote one.
        self._run_token = uuid.uuid4().hex
        self._held: dict[tuple[str, str], float] = {}
        # Alarms this run did not send because a silence covered them: alert id -> the silence's name.
        self._silenced: dict[str, str] = {}
        self._ended = False

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
        options = {name: self.get_option(name) for name in CONNECTION_OPTIONS}
        named = configured_integrations(os.environ)
        endpoint: Endpoint | None
        try:
            endpoint = resolve_endpoint(options, environ={})
        except EndpointError as exc:
            if any(options.values()):
                raise exc
            if not named:
                raise EndpointError('no Temperstack endpoint is configured (set TEMPERSTACK_WEBHOOK_URL, or '
                                    'webhook_url in the [callback_temperstack] section of ansible.cfg)') from None
            # Routing only: hosts that name no integration alert nowhere, and are told so.
            endpoint = None
        # The callback's integration option names the integration of hosts that do not set temperstack_integration.
        self._router.configure(endpoint, {name: options[name] for name in ('org', 'base_url') if options.get(name)},
                               self.get_option('integration'), os.environ)
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
        _reject_empty_variables(os.environ)
        timeout, retries = check_timeout(self.get_option('timeout')), check_retries(self.get_option('retries'))
        ca_path = check_ca_path(self.get_option('ca_path'))
        clients = [
            TemperstackClient(each, timeout=timeout, retries=retries, validate_certs=self.get_option('validate_certs'),
                              ca_path=ca_path)
            for each in self._router.endpoints.values()
        ]
        flush_timeout = _check_flush_timeout(self.get_option('flush_timeout'))
        self._ledger = self._open_ledger()
        self._endpoint_key = endpoint.ledger_key if endpoint is not None else ''
        self._prepare_ledger()
        self._flush_timeout = flush_timeout
        sender_options: dict[str, t.Any] = {'others': clients[1:]} if len(clients) > 1 else {}
        self._sender = SenderProcess(
            clients[0], self._ledger.spec, self._flush_timeout, run_token=self._run_token, fallback=self._fallback,
            unreachable=self._ledger.unreachable if self._shared_ledger_lost() else '', **sender_options,
        )
        _RUNS.add(self)
        if any(self._ledger.pending(key) for key in self._router.keys()):
            # What earlier runs could not deliver goes first, before this run's own alerts.
            self._sender.notify()

    def _prepare_ledger(self) -> None:
        try:
            if isinstance(self._ledger, LedgerWithFallback) and not self._ledger.degraded:
                self._ledger.silences()  # kept in the fallback file, should the server be lost during the run
            self._ledger.prune_if_due()
            # Failures held by a run on this controller that was killed outright (its delivery process too) are
            # delivered now, before this run's own alerts.
            self._ledger.release_stale_holds()
        except LedgerError as exc:
            self._display.warning(f'temperstack: could not tidy the ledger up: {exc}')

    def _open_ledger(self) -> Ledger:
        url = check_ledger_url(self.get_option('ledger_url'))
        spec = ledger_spec(url, self.get_option('ledger_path'))
        if url:
            self._fallback = fallback_path(self.get_option('ledger_path'))
        # With a shared ledger, a server that does not answer in time is a fallback, never a reason to go without
        # alerts (see LedgerWithFallback).
        ledger = open_ledger(spec, warn=self._display.warning, fallback=self._fallback or None, on_fallback=self._fell_back)
        records, entries = getattr(ledger, 'moved', (0, 0))
        if records or entries:
            self._display.vv(
                f'temperstack: moved {records} records and {entries} queued alerts kept on this controller into {ledger.location}'
            )
        return ledger

    def _fell_back(self, exc: LedgerError) -> None:
        self._display.warning(
            f'temperstack: {exc}. This run raises Alarms for failures without knowing what Temperstack already holds, '
            f'and decides no OK, which needs the shared ledger\'s memory of the Alarm. What cannot be delivered waits '
            f'in {self._fallback}, and the next run on this controller that reaches the server moves it there.'
        )

    def _shared_ledger_lost(self) -> bool:
        """Whether this controller's fallback file stands in for the shared ledger."""
        return isinstance(self._ledger, LedgerWithFallback) and self._ledger.degraded

    def _try_shared_ledger_again(self) -> None:
        if isinstance(self._ledger, LedgerWithFallback):
            self._ledger.reconnect()

    def _close_ledger(self) -> None:
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            with contextlib.suppress(Exception):
                ledger.close()

    def _disable(self, reason: str) -> None:
        self.disabled = True
        self._close_ledger()
        self._display.warning(f'temperstack.alerting.playbook_alerts is disabled: {reason}')

    # -- what happens in the run -------------------------------------------------------------------

    def v2_playbook_on_start(self, playbook: t.Any) -> None:
        self._playbook = getattr(playbook, '_file_name', '') or ''
        get_loader = getattr(playbook, 'get_loader', None)
        self._loader = get_loader() if get_loader is not None else None

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
        # taken out without a failure of its own did not run to the end; the other hosts may have. A meta
        # task that was skipped by its condition takes no host out, so it does not count.
        removed = set(getattr(self._play, '_removed_hosts', None) or ())
        self._book.ended_early(removed - {host for play in self._book.plays for host in play.failures})

    def v2_playbook_on_no_hosts_matched(self) -> None:
        # An empty group, a hosts template that resolved to nothing: the play ran on no host, so it
        # resolves nothing. Ansible sends this right after the play's start.
        self._book.no_hosts_matched()

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
        self._book.host_failed(host, _task_name(result), _error_message(result), route=self._route_of(result))
        self._hold(host)

    def _route_of(self, result: t.Any) -> str:
        return self._router.route_of(self._play, getattr(result, 'host', None) or result._host, self._loader)

    def v2_runner_on_unreachable(self, result: t.Any) -> None:
        task = _task_of(result)
        host = _host_name(result)
        if getattr(task, 'ignore_unreachable', False):
            self._book.host_ran(host)
            return
        self._book.host_failed(host, _task_name(result), _error_message(result), unreachable=True,
                               route=self._route_of(result))
        self._hold(host)

    def v2_playbook_on_stats(self, stats: t.Any) -> None:
        self._ended = True
        self._note_removed_hosts()
        self._finish_play()
        if self._sender is None:
            return
        if self._settings.scope != 'play':
            self._queue_alarms(self._book.plays)
        self._release_held()  # none is left unless a unit's Alarm could not be queued: then it goes as held
        if not _narrowed_run():
            self._queue_recoveries()
        self._report(self._sender.flush(on_slow=self._say_still_delivering))

    def _at_exit(self) -> None:
        """The run ended without its stats: Ctrl-C, or an ERROR! that aborted it. What failed so far goes out now."""
        if self._ended or self._sender is None or self._ledger is None:
            return
        self._ended = True
        # The newest state of every held failure, not one a failure storm left a second old.
        held = {alert_id for _key, alert_id in self._held}
        self._write_holds([unit for unit in self._current_units() if unit.alert_id in held], force=True)
        if not self._release_held():
            return
        self._display.warning(
            'temperstack: the run ended before its end; the Alarms of the failures seen so far are sent now, '
            'and no OK is sent for this run'
        )
        self._sender.notify()
        self._report(self._sender.flush(on_slow=self._say_still_delivering))

    # -- failures held until their unit ends -------------------------------------------------------

    def _hold(self, host: str) -> None:
        """Make the failure just seen durable at once, as the Alarm its unit would raise if the run ended now.

        It is not sent while the run goes on (the unit's Alarm, sent when the unit ends, replaces it), but a
        run killed or interrupted before then never loses it: its delivery process, its exit, or the next run
        releases it for delivery.
        """
        if self._ledger is not None and self._sender is not None:
            self._write_holds([unit for unit in self._current_units() if host in unit.failed_hosts])

    def _current_units(self) -> list[t.Any]:
        """The units the current play is part of, with everything that happened in them so far."""
        current = self._book.current
        if current is None:
            return []
        if self._settings.scope == 'play':
            plays = [current]
        else:
            plays = [play for play in self._book.plays if play.playbook == current.playbook]
        return self._book.units(self._settings.scope, self._settings.alert_id_prefix, plays)

    def _write_holds(self, units: t.Sequence[t.Any], force: bool = False) -> None:
        now = time.monotonic()
        for whole in units:
            for endpoint, unit in self._router.routed(whole, announce=False):
                # A failure storm rewrites each unit's held Alarm at most once a second: its description already
                # stops listing failures long before, and rebuilding it for each of thousands would cost seconds.
                held = (endpoint.ledger_key, unit.alert_id)
                last = self._held.get(held)
                if not force and last is not None and len(unit.failed_hosts) > HOLD_EVERY_FAILURE_UP_TO and now - last < 1.0:
                    continue
                try:
                    self._hold_unit(self._ledger, endpoint.ledger_key, unit)
                except LedgerError as exc:
                    self._display.warning(f'temperstack: could not record the failure of {unit.alert_id}: {exc}')
                    continue
                self._held[held] = now
        # The delivery process keeps what is held alive, and delivers it should this process die.
        self._sender.notify()

    def _hold_unit(self, ledger: Ledger, key: str, unit: t.Any) -> None:
        known = ledger.on_record(key, unit.alert_id)
        alarm, hosts = alarm_for(unit, self._settings), _alarm_hosts(known, failed_hosts_of(unit))
        if self._silence_for(ledger, alarm, hosts) is None:
            ledger.hold(key, alarm, hosts, self._run_token, this_process())

    def _release_held(self) -> int:
        if not self._held or self._ledger is None:
            return 0
        self._held.clear()
        try:
            return self._ledger.release_holds(self._run_token)
        except LedgerError as exc:
            self._display.warning(f'temperstack: could not release the failures this run recorded: {exc}')
            return 0

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
                for endpoint, part in self._router.routed(unit):
                    self._queue(endpoint.ledger_key, alarm_for(part, self._settings), failed_hosts_of(part))

    def _queue_recoveries(self) -> None:
        if self._ledger is None:
            return
        undecided = []
        self._try_shared_ledger_again()
        for unit in self._book.units(self._settings.scope, self._settings.alert_id_prefix):
            if not unit.ran_to_end:
                continue
            # Where the unit raises a new Alarm, it sends no OK. An OK follows its Alarm: it goes to every endpoint
            # whose ledger holds the alert open, whatever integration its hosts name now.
            alarmed = {endpoint.ledger_key for endpoint, _part in self._router.routed(unit, announce=False)} if unit.failed_hosts else set()
            if self._shared_ledger_lost():
                # Only the shared ledger knows every host of an open Alarm, whichever controller raised it: an OK
                # decided without it could claim hosts that nobody checked. The next run that reaches it decides.
                if set(self._router.keys()) - alarmed:
                    undecided.append(unit.alert_id)
                continue
            for key in self._router.keys():
                if key in alarmed:
                    continue
                try:
                    known = self._ledger.lookup(key, unit.alert_id)
                except LedgerError as exc:
                    self._display.warning(f'temperstack: could not decide the OK for {unit.alert_id}: {exc}')
                    continue
                if self._shared_ledger_lost():
                    undecided.append(unit.alert_id)  # lost during that lookup: the answer came from the fallback file
                    break
                if known is None or known.status != STATUS_ALARM:
                    if not unit.failed_hosts:
                        self._forget_unsent_alarm(key, unit.alert_id)
                    continue
                # A host of the Alarm that did not run this unit was not checked, whatever left it out: --limit,
                # an inventory change, or a failure in an earlier play that dropped it from the rest of the playbook.
                if recovered_apart(unit, known.hosts):
                    self._queue(key, ok_for(unit, self._settings), ())
        if undecided:
            shown = ', '.join(undecided[:5]) + (f' and {len(undecided) - 5} more' if len(undecided) > 5 else '')
            self._display.warning(
                f'temperstack: no OK is decided for {shown} while the shared ledger is unreachable; the next run '
                'that reaches it sends the OK of each whose Alarm is open'
            )

    def _queue(self, key: str, alert: t.Any, hosts: t.Sequence[str]) -> None:
        if self._ledger is None or self._sender is None:
            return
        try:
            news = self._write_decision(self._ledger, key, alert, hosts)
            self._held.pop((key, alert.alert_id), None)
            if not news:
                return
        except LedgerError as exc:
            self._display.warning(f'temperstack: could not queue {alert.status} for {alert.alert_id}: {exc}')
            return
        self._sender.notify()

    def _write_decision(self, ledger: Ledger, key: str, alert: t.Any, hosts: t.Sequence[str]) -> bool:
        """Queue ``alert`` for the endpoint of ``key`` if it is news; returns whether it was.

        News is decided against what the ledger has on record, never against a held failure (this run's or
        another's, expired or not): a held failure is a guess at an Alarm, and settling it as old news because of
        itself would lose the Alarm.
        """
        known = ledger.on_record(key, alert.alert_id)
        if alert.status == STATUS_ALARM:
            hosts = _alarm_hosts(known, hosts)
        # An Alarm the same as the one on record still goes out when it names hosts the record lacks (its
        # list of hosts was cut to fit), so that the record holds every host the OK will need.
        news = is_news(alert, known) or not set(hosts) <= set(known.hosts)
        silence = self._silence_for(ledger, alert, hosts) if news and alert.status == STATUS_ALARM else None
        if silence is not None:
            # Withheld, and remembered as the alert's last stated status: sent by the first decision after the silence.
            ledger.withhold(key, alert, hosts, silence)
            self._silenced[alert.alert_id] = silence
            news = False
        if (key, alert.alert_id) in self._held:
            # The unit has ended: its Alarm (or nothing, if Temperstack has it already) replaces what was held.
            ledger.settle(key, alert.alert_id, self._run_token, alert if news else None, hosts)
        elif news:
            ledger.queue(key, alert, hosts)
        return news

    def _forget_unsent_alarm(self, key: str, alert_id: str) -> None:
        """A unit that recovered before its withheld Alarm was ever sent: nothing to resolve, nothing left to send."""
        try:
            if self._ledger is not None and self._ledger.withheld(key, alert_id):
                self._ledger.forget_withheld(key, alert_id)
        except LedgerError as exc:
            self._display.warning(f'temperstack: could not forget the withheld Alarm of {alert_id}: {exc}')

    def _silence_for(self, ledger: Ledger, alarm: t.Any, hosts: t.Sequence[str]) -> str | None:
        silence = silencing(ledger.silences(), alarm.alert_id, alarm.payload.get('resource_id'), hosts)
        return None if silence is None else silence.name

    def _say_still_delivering(self, seconds_left: float) -> None:
        """The end of the run has waited a while on Temperstack: say once what for, rather than stall silently."""
        try:
            count = sum(len(self._ledger.pending(key)) for key in self._router.keys()) if self._ledger is not None else 0
        except LedgerError:
            count = 0
        what = f"{count} alert{'s' if count != 1 else ''}" if count else 'alerts'
        self._display.display(f'Temperstack: delivering {what} (up to {int(seconds_left + 0.5)} s more)...')

    def _report(self, report: t.Any) -> None:
        silenced, self._silenced = self._silenced, {}
        if report.sent or report.queued or silenced:
            parts = [f'{report.sent.count(status)} {status}' for status in ('Alarm', 'OK') if status in report.sent]
            line = 'sent ' + ', '.join(parts) if parts else 'sent nothing'
            if report.queued > 0:
                line += f'; {report.queued} queued for the next run'
            for name in sorted(set(silenced.values())):
                count = list(silenced.values()).count(name)
                line += f"; {count} Alarm{'s' if count > 1 else ''} withheld by silence {name}"
            self._display.display(f'Temperstack: {line}')
        for error in report.errors:
            self._display.warning(f'temperstack: {error}')
        if not report.finished:
            self._display.warning(
                f'temperstack: delivery did not finish within flush_timeout ({self._flush_timeout:g} s); '
                'what is left stays queued for the next run'
            )


# The callbacks configured in this process, for the exit handler below. Held weakly: a callback that is gone
# (as each one of a test's many is) has nothing left to send, and its ledger connection is closed with it.
_RUNS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _end_interrupted_runs() -> None:
    """At exit after Ctrl-C or an ERROR! (never after SIGTERM or SIGKILL): each run sends what it saw fail."""
    for run in list(_RUNS):
        try:
            run._at_exit()  # pylint: disable=protected-access
        finally:
            run._close_ledger()  # pylint: disable=protected-access


_CLIENT_VARIABLES = ('TEMPERSTACK_TIMEOUT', 'TEMPERSTACK_RETRIES', 'TEMPERSTACK_VALIDATE_CERTS', 'TEMPERSTACK_CA_PATH')
# Up to this many failures in one unit, each is written to the ledger the moment it is seen.
HOLD_EVERY_FAILURE_UP_TO = 100


def _reject_empty_variables(environ: t.Mapping[str, str]) -> None:
    """An empty TEMPERSTACK_* setting is an error, as it is for the alert module.

    Ansible's configuration reads an empty boolean as false: an empty TEMPERSTACK_VALIDATE_CERTS would quietly
    turn certificate checks off.
    """
    for name in _CLIENT_VARIABLES:
        if name in environ and not environ[name].strip():
            option = name[len('TEMPERSTACK_'):].lower()
            raise AlertValidationError(f'{option} ({name}) is set but empty: give it a value or unset it')


def _alarm_hosts(known: Record | None, failed_hosts: t.Sequence[str]) -> list[str]:
    """The hosts an Alarm names: this run's failed hosts, and those of the Alarm on record if it is still open."""
    open_hosts = known.hosts if known is not None and known.status == STATUS_ALARM else ()
    return hosts_of_open_alarm(open_hosts, failed_hosts)


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
