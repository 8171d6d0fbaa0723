# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Who holds a claim: a dead holder is told apart from a live one only where that can be proved."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from ansible_collections.temperstack.alerting.plugins.plugin_utils import _holder
from ansible_collections.temperstack.alerting.plugins.plugin_utils._holder import is_gone, this_process

DEAD_PID = 2 ** 22 + 7  # above Linux's largest pid_max


def _holder_of(pid: int, started: str = '', boot: str | None = None, namespace: str | None = None) -> str:
    boot = _holder._boot_id() if boot is None else boot  # pylint: disable=protected-access
    namespace = _holder._pid_namespace() if namespace is None else namespace  # pylint: disable=protected-access
    return f'{socket.gethostname()}:{pid}:{started}@{boot}/{namespace}'


def test_this_process_names_its_host_pid_start_time_boot_and_pid_namespace():
    holder = this_process()
    assert holder.startswith(f'{socket.gethostname()}:{os.getpid()}:')
    assert '@' in holder and '/' in holder.split('@', 1)[1]
    assert not is_gone(holder)


def test_a_holder_whose_process_ended_is_gone():
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    assert is_gone(_holder_of(child.pid))
    assert is_gone(_holder_of(DEAD_PID))


def test_a_holder_in_another_pid_namespace_is_never_taken_for_dead():
    # Containers that share a host name but not a PID namespace cannot see each other's processes.
    assert not is_gone(_holder_of(DEAD_PID, namespace='4026531999'))
    assert not is_gone(_holder_of(DEAD_PID, boot='0123456789ab'))


def test_a_reused_pid_does_not_keep_a_dead_holder_alive():
    # Our own pid, as a holder that started at another time: the process with that pid now is someone else.
    assert is_gone(_holder_of(os.getpid(), started='1'))
    assert not is_gone(this_process())


def test_a_holder_on_another_host_is_never_gone():
    assert not is_gone(f'not-{socket.gethostname()}:{DEAD_PID}')


def test_a_holder_written_before_its_identity_had_a_namespace_is_judged_by_its_pid():
    assert is_gone(f'{socket.gethostname()}:{DEAD_PID}')
    assert not is_gone(f'{socket.gethostname()}:{os.getpid()}')
    assert not is_gone('')


def test_a_fork_is_a_holder_of_its_own():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, this_process().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    assert child != this_process() and child.split(':')[1] == str(pid)
