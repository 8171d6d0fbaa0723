# Copyright: Temperstack alerting collection maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run galaxy-importer on a built collection tarball, offline, as Galaxy does on upload.

Usage: .venv-lint/bin/python tools/check_galaxy_import.py WORK_DIR build/dist/temperstack-alerting-X.Y.Z.tar.gz

Run it with the python of the virtualenv that has galaxy-importer, ansible-lint and ansible-core
(.venv-lint): that virtualenv's bin/ goes first on PATH, so the importer's ansible-doc and
ansible-lint are the pinned ones. Settings: tools/galaxy-importer.cfg (GALAXY_IMPORTER_CONFIG),
which turns off what needs a network or a container engine (ansible-test in a container).

Fails (exit 1) when the import fails, when the importer logs any warning or error (ansible-lint
findings, a missing changelog, documentation that ansible-doc cannot load, missing required tags,
...), or when its result lacks the documentation of the module, the callback or a role that the
tarball ships. WORK_DIR is emptied first and keeps the importer's output and importer_result.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, 'galaxy-importer.cfg')

# (content type, name) that every build must hold, with documentation.
REQUIRED = (
    ('module', 'alert'),
    ('callback', 'playbook_alerts'),
)


def roles_in(tarball: str) -> list[str]:
    """Return the names of the roles the tarball ships."""
    with tarfile.open(tarball, 'r:gz') as tar:
        names = [member.name[2:] if member.name.startswith('./') else member.name for member in tar.getmembers()]
    return sorted({name.split('/')[1] for name in names if name.startswith('roles/') and name.count('/') >= 2})


def main(argv: list[str]) -> int:
    """Import the tarball given on the command line and judge the result."""
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2

    work, tarball = os.path.abspath(argv[0]), os.path.abspath(argv[1])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, 'ansible-home'))
    os.makedirs(os.path.join(work, 'tmp'))

    env = {key: value for key, value in os.environ.items() if not key.startswith(('ANSIBLE_', 'GALAXY_IMPORTER_'))}
    env.update(
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', ''),
        GALAXY_IMPORTER_CONFIG=CONFIG,
        # Environment overrides of tools/galaxy-importer.cfg (galaxy_importer.config.Config):
        # ansible-lint's and ansible-doc's scratch space stays in WORK_DIR.
        GALAXY_IMPORTER_ANSIBLE_LOCAL_TMP=os.path.join(work, 'tmp'),
        GALAXY_IMPORTER_TMP_ROOT_DIR=os.path.join(work, 'tmp'),
        ANSIBLE_HOME=os.path.join(work, 'ansible-home'),
        ANSIBLE_NOCOLOR='1',
    )

    # importer_result.json is written to the current directory.
    process = subprocess.run(
        [sys.executable, '-m', 'galaxy_importer.main', tarball],
        cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, check=False,
    )
    with open(os.path.join(work, 'importer.log'), 'w') as handle:
        handle.write(process.stdout)
    for line in process.stdout.splitlines():
        print('  | %s' % line)

    problems = []
    if process.returncode != 0:
        problems.append('galaxy-importer exited with %d' % process.returncode)
    problems.extend(
        'importer: %s' % line.strip() for line in process.stdout.splitlines()
        if line.startswith(('WARNING', 'ERROR', 'CRITICAL')) or 'Traceback' in line
    )

    result_path = os.path.join(work, 'importer_result.json')
    if os.path.exists(result_path):
        with open(result_path) as handle:
            result = json.load(handle)
        docs = {
            (entry.get('content_type'), entry.get('content_name')): entry
            for entry in result.get('docs_blob', {}).get('contents', [])
        }
        required = list(REQUIRED) + [('role', role) for role in roles_in(tarball)]
        for content_type, name in required:
            entry = docs.get((content_type, name))
            if entry is None:
                problems.append('%s %s: not found by the importer' % (content_type, name))
            elif not (entry.get('doc_strings') or entry.get('argument_spec') or entry.get('readme_html')):
                problems.append('%s %s: no documentation in the import result' % (content_type, name))
            else:
                print('check_galaxy_import: %s %s documented' % (content_type, name))
        if not result.get('docs_blob', {}).get('collection_readme', {}).get('html'):
            problems.append('README.md: not rendered by the importer')
        print('check_galaxy_import: requires_ansible %s' % result.get('requires_ansible'))
    elif process.returncode == 0:
        problems.append('no importer_result.json written')

    if problems:
        print('check_galaxy_import: FAILED', file=sys.stderr)
        for problem in problems:
            print('  %s' % problem, file=sys.stderr)
        return 1

    print('check_galaxy_import: OK (%s)' % os.path.basename(tarball))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
