# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This doc fragment is PRIVATE to the collection: it may change at any time.
# Do not use it from other collections or from standalone plugins or modules.

from __future__ import annotations


class ModuleDocFragment:
    # The attributes every module of the collection shares: each is an action
    # plugin that runs on the controller. A module states its own check_mode,
    # diff_mode and idempotent attributes (their support differs), and may
    # override any entry here (an entry in the module wins, key by key).
    DOCUMENTATION = r"""
options: {}
attributes:
  action:
    description: Implemented by an action plugin that runs on the controller.
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  become:
    description: Has no effect; nothing runs on the managed node.
    support: none
  bypass_host_loop:
    description: Runs once for each host it is given; use C(run_once=true).
    support: none
  platform:
    description: Runs on the controller, whatever the target platform.
    support: full
    platforms: all
"""

    # For the modules in the temperstack action group (meta/runtime.yml).
    # Use together with the standard fragment.
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/temperstack.alerting.temperstack) in C(module_defaults) to set the connection once.
    support: full
    membership:
      - temperstack.alerting.temperstack
"""
