# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Who holds a claim or a held failure, told apart well enough that a dead holder need not be waited for.

A holder is written as ``host:pid:start@boot/pidns``. Another process may take a holder's claim early only when
it can prove that holder dead: same host name, same kernel boot, same PID namespace, and no process with that PID
and start time. Containers that share a host name but not a PID namespace (two AWX job pods, say) cannot prove
anything about each other's processes, and wait for the lease instead.
"""

from __future__ import annotations

import functools
import os
import socket


@functools.lru_cache(maxsize=None)
def _boot_id() -> str:
    try:
        with open('/proc/sys/kernel/random/boot_id', encoding='ascii') as boot:
            return boot.read().strip().replace('-', '')[:12]
    except OSError:
        return ''


def _pid_namespace() -> str:
    try:
        return str(os.stat('/proc/self/ns/pid').st_ino)
    except OSError:
        return ''


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot; '' where /proc cannot tell, None if it is gone."""
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as stat_file:
            fields = stat_file.read().rsplit(')', 1)[1].split()
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        return ''
    # A zombie does not run: killed, it holds nothing, whoever reaps it and when.
    if fields[0] in ('Z', 'X'):
        return None
    return fields[19] if len(fields) > 19 else ''


@functools.lru_cache(maxsize=None)
def _identity(pid: int) -> str:
    return f'{socket.gethostname()}:{pid}:{_start_time(pid) or ""}@{_boot_id()}/{_pid_namespace()}'


def this_process() -> str:
    """This controller and process, as a holder of claims and held failures (cached per process, forks included)."""
    return _identity(os.getpid())


def is_gone(holder: str) -> bool:
    """Whether ``holder`` is provably a process that no longer runs (never for one this process cannot see)."""
    head, _sep, place = (holder or '').partition('@')
    host, _sep, rest = head.partition(':')
    pid, _sep, started = rest.partition(':')
    if host != socket.gethostname() or not pid.isdigit():
        return False
    # A holder written before the boot and namespace were part of it (host:pid) is judged by its PID alone.
    if place:
        boot, _sep, namespace = place.partition('/')
        if boot != _boot_id() or namespace != _pid_namespace():
            return False
    if not os.path.isdir('/proc/self'):
        return not _process_exists(int(pid))
    now_started = _start_time(int(pid))
    if now_started is None:
        return True
    # The PID was reused by a process that started later: the holder is gone all the same.
    return bool(started and now_started and started != now_started)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # it exists, as another user's process
    return True
