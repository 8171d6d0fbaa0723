# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers of the eda target's runme.sh (standard library and PyYAML only).

    free-ports N                       print N free loopback ports
    wait-http URL TIMEOUT              wait until URL answers (any status)
    wait-port PORT TIMEOUT             wait until 127.0.0.1:PORT accepts connections
    post URL TOKEN JSON                POST JSON with a Bearer token; print the status
    last STAND_IN STATUS               print the JSON body of the last STATUS request the stand-in received
    wait-status STAND_IN ALERT_ID STATUS TIMEOUT   wait until the stand-in received STATUS for ALERT_ID
    count STAND_IN ALERT_ID STATUS     print how many STATUS requests for ALERT_ID the stand-in received
    rulebook SRC DST PORT              SRC's rulebook plus eda.builtin.webhook on PORT behind the normalize filter
"""

import json
import socket
import sys
import time
import urllib.error
import urllib.request


def requests(stand_in):
    with urllib.request.urlopen(stand_in + '/_stand_in/requests?delivered=1', timeout=10) as response:
        return [record['json'] for record in json.loads(response.read()) if isinstance(record.get('json'), dict)]


def main(command, *args):
    if command == 'free-ports':
        sockets = [socket.socket() for _round in range(int(args[0]))]
        for sock in sockets:
            sock.bind(('127.0.0.1', 0))
        print(' '.join(str(sock.getsockname()[1]) for sock in sockets))
        for sock in sockets:
            sock.close()
    elif command in ('wait-http', 'wait-port'):
        deadline = time.monotonic() + float(args[1])
        while time.monotonic() < deadline:
            try:
                if command == 'wait-port':
                    socket.create_connection(('127.0.0.1', int(args[0])), timeout=1).close()
                else:
                    urllib.request.urlopen(args[0], timeout=1).close()
                return 0
            except urllib.error.HTTPError:
                return 0
            except OSError:
                time.sleep(0.2)
        return f'{args[0]} did not answer within {args[1]} s'
    elif command == 'post':
        request = urllib.request.Request(args[0], data=args[2].encode(), method='POST', headers={
            'Content-Type': 'application/json', 'Authorization': f'Bearer {args[1]}'})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                print(response.status)
        except urllib.error.HTTPError as error:
            print(error.code)
    elif command == 'last':
        found = [body for body in requests(args[0]) if body.get('status') == args[1]]
        if not found:
            return f'the stand-in received no {args[1]}'
        print(json.dumps(found[-1]))
    elif command == 'wait-status':
        deadline = time.monotonic() + float(args[3])
        while time.monotonic() < deadline:
            if any(body.get('alert_id') == args[1] and body.get('status') == args[2] for body in requests(args[0])):
                return 0
            time.sleep(0.25)
        return f'no {args[2]} for alert_id {args[1]} reached the stand-in within {args[3]} s'
    elif command == 'count':
        print(sum(body.get('alert_id') == args[1] and body.get('status') == args[2] for body in requests(args[0])))
    elif command == 'rulebook':
        import yaml  # pylint: disable=import-outside-toplevel
        with open(args[0], encoding='utf-8') as handle:
            rulesets = yaml.safe_load(handle)
        rulesets[0]['sources'].append({
            'name': 'builtin webhook behind the filter',
            'eda.builtin.webhook': {'host': '127.0.0.1', 'port': int(args[2]), 'token': '{{ temperstack_webhook_token }}'},
            'filters': [{'temperstack.alerting.normalize': {}}],
        })
        with open(args[1], 'w', encoding='utf-8') as handle:
            yaml.safe_dump(rulesets, handle, sort_keys=False)
    else:
        return f'unknown command {command}'
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
