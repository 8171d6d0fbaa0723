# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # How to reach Temperstack, how hard to try, and where the ledger lives.
    DOCUMENTATION = r"""
options:
  webhook_url:
    description:
      - The integration URL exactly as Temperstack shows it when you create a webhook integration key,
        V(https://ORG.temperstack.com/api/integration/webhook/KEY).
      - The URL contains the integration key. It is never logged, and wherever the collection shows a URL
        (error messages, warnings) the key is replaced by C(********).
      - Give either O(webhook_url), or O(api_key) together with O(org) or O(base_url).
        Options set on the task decide which way is used; the environment only fills in what they leave out.
      - If not set, the value of the E(TEMPERSTACK_WEBHOOK_URL) environment variable is used.
    type: str
  api_key:
    description:
      - The integration key alone, the last part of the integration URL.
      - Use with O(org) or O(base_url); mutually exclusive with O(webhook_url).
      - If not set, the value of the E(TEMPERSTACK_API_KEY) environment variable is used.
    type: str
  org:
    description:
      - Your Temperstack organisation, the V(ORG) in V(https://ORG.temperstack.com).
      - Use with O(api_key); mutually exclusive with O(base_url) and O(webhook_url).
      - If not set, the value of the E(TEMPERSTACK_ORG) environment variable is used.
    type: str
  base_url:
    description:
      - Any origin that serves Temperstack's webhook API, for example an on-premises installation or a proxy,
        such as V(https://temperstack.example.com). The webhook path and O(api_key) are appended to it.
      - Use with O(api_key); mutually exclusive with O(org) and O(webhook_url).
      - If not set, the value of the E(TEMPERSTACK_BASE_URL) environment variable is used.
    type: str
  integration:
    description:
      - The Temperstack integration (one application service, one key) by name, instead of O(webhook_url) and
        O(api_key). Its endpoint is E(TEMPERSTACK_WEBHOOK_URL_<NAME>), or E(TEMPERSTACK_API_KEY_<NAME>) with O(org)
        or O(base_url) (or their variables), where C(<NAME>) is the name upper-cased with every character other than
        A-Z and 0-9 turned into C(_) (V(payments-eu) is E(TEMPERSTACK_WEBHOOK_URL_PAYMENTS_EU)).
      - An integration whose variables are not set is an error that names the variable, before any request.
      - V(default), or not set, is the endpoint of the other connection options. V(none) alerts nowhere (the
        M(temperstack.alerting.alert) module sends nothing).
      - For M(temperstack.alerting.alert_info), the one integration to list; without it, the alerts of the default
        endpoint and of every integration the environment gives an endpoint to, each alert naming its integration.
      - The P(temperstack.alerting.playbook_alerts#callback) callback reads the variable C(temperstack_integration)
        of each failed host instead. Settable for every module of the group with C(module_defaults).
        See the collection's C(docs/routing.md).
    type: str
    version_added: 1.1.0
  timeout:
    description:
      - Seconds to wait for Temperstack to answer one request, at most 3600.
      - If not set, the value of the E(TEMPERSTACK_TIMEOUT) environment variable is used.
    type: int
    default: 10
  retries:
    description:
      - How many times a request is repeated after a connection error (a TLS handshake that a proxy or load balancer
        closes or resets included), a timeout, HTTP 429 or HTTP 5xx, with exponential backoff and jitter between
        attempts. A C(Retry-After) header is honoured up to 30 seconds.
      - Other HTTP 4xx answers, and a certificate that fails verification, are final and never repeated.
      - A task therefore gives up after at most O(timeout) x (O(retries) + 1) seconds plus the pauses between attempts.
      - If not set, the value of the E(TEMPERSTACK_RETRIES) environment variable is used.
    type: int
    default: 3
  validate_certs:
    description:
      - Verify Temperstack's TLS certificate.
      - Set to V(false) only on a test endpoint you control.
      - If not set, the value of the E(TEMPERSTACK_VALIDATE_CERTS) environment variable is used.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates to verify Temperstack's certificate with, instead of the system's.
      - If not set, the value of the E(TEMPERSTACK_CA_PATH) environment variable is used.
    type: path
  ledger_path:
    description:
      - The SQLite file in which the collection remembers what Temperstack has acknowledged, shared by every
        fork, task and the C(temperstack.alerting.playbook_alerts) callback on this controller.
      - It holds alert ids, statuses and payloads, and identifies endpoints only by a one-way hash;
        the integration key is never written to it. It is created with mode C(0600), in a directory created with mode C(0700).
      - If not set, the value of the E(TEMPERSTACK_LEDGER_PATH) environment variable is used,
        and otherwise V(~/.ansible/temperstack/ledger.sqlite3).
      - With O(ledger_url) set, this file is not the ledger. Its directory then holds C(ledger.fallback.sqlite3)
        (named after this file), where the controller keeps what it could not write to the shared ledger while the
        server was unreachable. The next task or run on this controller that reaches the server moves it there.
    type: path
  ledger_url:
    description:
      - A PostgreSQL database that keeps the ledger for a fleet of controllers, or for AWX and Automation Controller
        jobs, whose local files are lost with each job's container. When set, it is used instead of O(ledger_path).
      - A libpq connection URI, V(postgresql://user[:password]@host[:port]/dbname[?sslmode=verify-full]). The
        password may instead come from libpq's usual places (E(PGPASSWORD), C(~/.pgpass), E(PGPASSFILE)), and TLS
        settings from E(PGSSLMODE) and the like.
      - The ledger lives in the database's schema C(temperstack), which is created on first use unless a database
        owner created it beforehand. See the collection's C(docs/fleet.md) for set-up and the privileges needed.
      - Needs the Python package C(psycopg) (version 3) on the controller or in the execution environment.
        Nothing else in the collection needs it.
      - If the server cannot be reached (within 5 seconds), the alert is still sent, with a warning, even if
        Temperstack already holds it; an OK with O(temperstack.alerting.alert#module:only_if_raised=true) is not sent. What was sent is remembered
        in the fallback file next to O(ledger_path) until a later run reaches the server.
      - Never shown in output; its password is masked in every message.
      - If not set, the value of the E(TEMPERSTACK_LEDGER_URL) environment variable is used. An empty value is an error.
    type: str
notes:
  - Proxies from the usual environment variables (E(https_proxy), E(http_proxy), E(no_proxy)) are honoured.
  - The E(TEMPERSTACK_*) environment variables named above mean the same to the P(temperstack.alerting.playbook_alerts#callback)
    callback, so one environment configures both. An option set on the task, directly or through C(module_defaults),
    wins over its variable.
"""

    # The same options for the playbook_alerts callback, which reads them from ansible.cfg and the environment.
    CALLBACK = r"""
options:
  webhook_url:
    description:
      - The integration URL exactly as Temperstack shows it, V(https://ORG.temperstack.com/api/integration/webhook/KEY).
      - Give either O(webhook_url), or O(api_key) together with O(org) or O(base_url).
      - The key in it is never logged nor written to disk.
    type: str
    env:
      - name: TEMPERSTACK_WEBHOOK_URL
    ini:
      - section: callback_temperstack
        key: webhook_url
  api_key:
    description:
      - The integration key alone; use with O(org) or O(base_url).
    type: str
    env:
      - name: TEMPERSTACK_API_KEY
    ini:
      - section: callback_temperstack
        key: api_key
  org:
    description:
      - Your Temperstack organisation, the V(ORG) in V(https://ORG.temperstack.com); use with O(api_key).
    type: str
    env:
      - name: TEMPERSTACK_ORG
    ini:
      - section: callback_temperstack
        key: org
  base_url:
    description:
      - Any origin that serves Temperstack's webhook API (on-premises, a proxy); use with O(api_key).
    type: str
    env:
      - name: TEMPERSTACK_BASE_URL
    ini:
      - section: callback_temperstack
        key: base_url
  integration:
    description:
      - The integration of the hosts that do not set the variable C(temperstack_integration), whose alerts go to
        the endpoint E(TEMPERSTACK_WEBHOOK_URL_<NAME>) (or E(TEMPERSTACK_API_KEY_<NAME>) with O(org) or O(base_url)).
      - Not set, or V(default), is the endpoint of O(webhook_url) or O(api_key). V(none) sends nothing for those hosts.
      - Each failed host's own C(temperstack_integration), resolved as Ansible resolves variables for that host in that
        play, names the integration of its alerts. See the collection's C(docs/routing.md).
    type: str
    version_added: 1.1.0
    env:
      - name: TEMPERSTACK_INTEGRATION
    ini:
      - section: callback_temperstack
        key: integration
  timeout:
    description:
      - Seconds to wait for Temperstack to answer one request, at most 3600.
    type: int
    default: 10
    env:
      - name: TEMPERSTACK_TIMEOUT
    ini:
      - section: callback_temperstack
        key: timeout
  retries:
    description:
      - How many times a request is repeated after a connection error (a TLS handshake that a proxy or load balancer
        closes or resets included), a timeout, HTTP 429 or HTTP 5xx, with exponential backoff and jitter. Other HTTP
        4xx answers, and a certificate that fails verification, are final.
    type: int
    default: 3
    env:
      - name: TEMPERSTACK_RETRIES
    ini:
      - section: callback_temperstack
        key: retries
  validate_certs:
    description:
      - Verify Temperstack's TLS certificate.
    type: bool
    default: true
    env:
      - name: TEMPERSTACK_VALIDATE_CERTS
    ini:
      - section: callback_temperstack
        key: validate_certs
  ca_path:
    description:
      - A PEM file of CA certificates to verify Temperstack's certificate with.
    type: path
    env:
      - name: TEMPERSTACK_CA_PATH
    ini:
      - section: callback_temperstack
        key: ca_path
  ledger_path:
    description:
      - The SQLite ledger shared with the M(temperstack.alerting.alert) module, which remembers what Temperstack
        acknowledged and holds the outbox of alerts not yet delivered.
      - Defaults to V(~/.ansible/temperstack/ledger.sqlite3).
    type: path
    env:
      - name: TEMPERSTACK_LEDGER_PATH
    ini:
      - section: callback_temperstack
        key: ledger_path
  ledger_url:
    description:
      - A PostgreSQL database that keeps the ledger for a fleet of controllers, or for AWX and Automation Controller
        jobs; when set, it is used instead of O(ledger_path), whose directory then holds the fallback file
        C(ledger.fallback.sqlite3).
      - A libpq connection URI, V(postgresql://user[:password]@host[:port]/dbname[?sslmode=verify-full]); the
        password may come from E(PGPASSWORD), C(~/.pgpass) or E(PGPASSFILE) instead. Needs the Python package
        C(psycopg) (version 3). See the collection's C(docs/fleet.md).
      - If the server cannot be reached, the run goes on. Alarms for failed units are still raised; OKs, which need
        the shared ledger's memory of the Alarm, are not sent, with a warning. What cannot be delivered waits in the
        fallback file, and the next run on this controller that reaches the server moves it into the shared ledger.
      - Its password is masked in every message. An empty value is an error.
    type: str
    env:
      - name: TEMPERSTACK_LEDGER_URL
    ini:
      - section: callback_temperstack
        key: ledger_url
"""

    # For the modules of the action group that send nothing (alert_info, outbox): list it BEFORE the main fragment,
    # whose descriptions of these options it replaces (the first fragment to name an option wins).
    NOT_SENDING = r"""
options:
  timeout:
    description:
      - Accepted only so that C(module_defaults) for the action group C(group/temperstack.alerting.temperstack) can
        set it for every module of the group. Not used, since this module sends no request to Temperstack.
  retries:
    description:
      - Accepted only so that C(module_defaults) for the action group C(group/temperstack.alerting.temperstack) can
        set it for every module of the group. Not used, since this module sends no request to Temperstack.
  validate_certs:
    description:
      - Accepted only so that C(module_defaults) for the action group C(group/temperstack.alerting.temperstack) can
        set it for every module of the group. Not used, since this module sends no request to Temperstack.
  ca_path:
    description:
      - Accepted only so that C(module_defaults) for the action group C(group/temperstack.alerting.temperstack) can
        set it for every module of the group. Not used, since this module sends no request to Temperstack.
"""
