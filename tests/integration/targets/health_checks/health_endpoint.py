# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A loopback HTTP endpoint whose health runme.sh flips through files (standard library only).

    health_endpoint.py serve STATE_DIR PORT_FILE   serve on 127.0.0.1 (a free port, written to PORT_FILE)
    health_endpoint.py set STATE_DIR NAME STATUS BODY   make GET /NAME answer STATUS with BODY
    health_endpoint.py hits URL                    print how many GET /NAME requests were served

GET /NAME answers what STATE_DIR/NAME.json says ({"status": 503, "body": "..."}), or 404 if there is no
such file. The answer is read on every request, so flipping a file flips the endpoint at once.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import urllib.request


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'HealthEndpoint/1.0'

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    def do_GET(self):  # pylint: disable=invalid-name
        if self.path == '/_hits':
            self._answer(200, str(self.server.hits))
            return
        with self.server.lock:
            self.server.hits += 1
        name = self.path.strip('/')
        try:
            with open(os.path.join(self.server.state_dir, os.path.basename(name) + '.json'), encoding='utf-8') as handle:
                state = json.load(handle)
        except FileNotFoundError:
            self._answer(404, 'no such endpoint')
            return
        self._answer(int(state['status']), state.get('body', ''))

    def _answer(self, status, body):
        data = body.encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(data)


def serve(state_dir: str, port_file: str) -> None:
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    server.daemon_threads = True
    server.state_dir = state_dir
    server.hits = 0
    server.lock = threading.Lock()
    # Written once the socket listens, and atomically, so that whoever sees the file can connect.
    with open(port_file + '.tmp', 'w', encoding='utf-8') as handle:
        handle.write(str(server.server_address[1]))
    os.replace(port_file + '.tmp', port_file)
    server.serve_forever()


def set_state(state_dir: str, name: str, status: str, body: str) -> None:
    path = os.path.join(state_dir, name + '.json')
    with open(path + '.tmp', 'w', encoding='utf-8') as handle:
        json.dump({'status': int(status), 'body': body}, handle)
    os.replace(path + '.tmp', path)


def main(argv: list[str]) -> int:
    command, args = argv[1], argv[2:]
    if command == 'serve':
        serve(*args)
    elif command == 'set':
        set_state(*args)
    elif command == 'hits':
        with urllib.request.urlopen(args[0].rstrip('/') + '/_hits', timeout=10) as response:
            print(response.read().decode('utf-8'))
    else:
        sys.exit(f'unknown command {command!r}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
