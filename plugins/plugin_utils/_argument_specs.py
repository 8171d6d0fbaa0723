# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The options the connection doc fragment documents, as the action plugins validate them."""

from __future__ import annotations

import typing as t

from ansible.module_utils.common.parameters import env_fallback

from ._client import DEFAULT_RETRIES, DEFAULT_TIMEOUT

# Every module of the action group takes all of these, so that module_defaults for the group can set them.
CONNECTION_ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    'webhook_url': {'type': 'str', 'no_log': True},
    'api_key': {'type': 'str', 'no_log': True},
    'org': {'type': 'str'},
    'base_url': {'type': 'str'},
    # Routing: the endpoint of a named integration (TEMPERSTACK_WEBHOOK_URL_<NAME>), instead of the options above.
    'integration': {'type': 'str'},
    # The callback reads the same variables (doc_fragments/connection.py): a private CA or a timeout set in the
    # environment must mean the same to both. An option set on the task, or by module_defaults, wins.
    'timeout': {'type': 'int', 'default': DEFAULT_TIMEOUT, 'fallback': (env_fallback, ['TEMPERSTACK_TIMEOUT'])},
    'retries': {'type': 'int', 'default': DEFAULT_RETRIES, 'fallback': (env_fallback, ['TEMPERSTACK_RETRIES'])},
    'validate_certs': {'type': 'bool', 'default': True, 'fallback': (env_fallback, ['TEMPERSTACK_VALIDATE_CERTS'])},
    'ca_path': {'type': 'path', 'fallback': (env_fallback, ['TEMPERSTACK_CA_PATH'])},
    'ledger_path': {'type': 'path'},
    'ledger_url': {'type': 'str', 'no_log': True, 'fallback': (env_fallback, ['TEMPERSTACK_LEDGER_URL'])},
}
