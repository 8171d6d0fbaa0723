# Copyright: Temperstack alerting collection maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check that a built collection tarball holds what we ship and nothing else.

Usage: python tools/check_tarball.py build/dist/temperstack-alerting-X.Y.Z.tar.gz

Fails (exit 1) when the tarball contains test caches, virtual environments,
build output, CI or repo tooling, the test stand-in service, compiled Python
files, or lacks the files every collection artifact needs.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import tarfile

# Any path component matching one of these is forbidden.
FORBIDDEN_COMPONENTS = (
    '.venv*',
    'venv',
    '__pycache__',
    '.pytest_cache',
    '.hypothesis',
    '.mypy_cache',
    '.ruff_cache',
    '.tox',
    '.cache',
    '.git',
    '.ci',
    '.github',
    '*.egg-info',
)

# Paths (relative to the collection root) that must not be in the artifact.
FORBIDDEN_PATHS = (
    '*.pyc',
    '*.pyo',
    '*.tar.gz',
    '.gitignore',
    'Makefile',
    'requirements-*.txt',
    'build/*',
    'tools/*',
    'tests/output/*',
    'tests/stand_in',
    'tests/stand_in/*',
    'tests/faults',
    'tests/faults/*',
    'tests/unit/*',
    'tests/integration/*',
)

REQUIRED_PATHS = (
    'MANIFEST.json',
    'FILES.json',
    'README.md',
    'meta/runtime.yml',
    # Galaxy shows the changelog; ansible-builder reads the collection's EE metadata from the
    # artifact (a build_ignore'd file would be silently missing there).
    'changelogs/changelog.yaml',
    'CHANGELOG.md',
    'meta/execution-environment.yml',
)


def problems(names: list[str]) -> list[str]:
    """Return a description of every problem found in the member names."""
    found = []

    for name in names:
        parts = name.split('/')

        if name.startswith('/') or '..' in parts:
            found.append('%s: unsafe path' % name)
            continue

        for part in parts:
            bad = [pattern for pattern in FORBIDDEN_COMPONENTS if fnmatch.fnmatchcase(part, pattern)]
            if bad:
                found.append('%s: path component %r matches %r' % (name, part, bad[0]))
                break
        else:
            bad = [pattern for pattern in FORBIDDEN_PATHS if fnmatch.fnmatchcase(name, pattern)]
            if bad:
                found.append('%s: matches forbidden pattern %r' % (name, bad[0]))

    for required in REQUIRED_PATHS:
        if required not in names:
            found.append('%s: missing' % required)

    return found


def main(argv: list[str]) -> int:
    """Check the tarball given on the command line."""
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2

    path = argv[0]

    with tarfile.open(path, 'r:gz') as tar:
        members = {}
        for member in tar.getmembers():
            name = member.name.rstrip('/')
            name = name[2:] if name.startswith('./') else name
            if name not in ('', '.'):
                members[name] = member
        names = list(members)

        found = problems(names)

        if 'MANIFEST.json' in names:
            manifest = json.load(tar.extractfile(members['MANIFEST.json']))
            info = manifest.get('collection_info', {})
            fqcn = '%s.%s' % (info.get('namespace'), info.get('name'))
            if fqcn != 'temperstack.alerting':
                found.append('MANIFEST.json: collection is %s, expected temperstack.alerting' % fqcn)

        links = [name for name, member in members.items() if member.issym() or member.islnk()]
        found.extend('%s: links are not allowed in the artifact' % name for name in links)

    files = sorted(name for name, member in members.items() if member.isfile())
    print('check_tarball: %s holds %d files' % (path, len(files)))
    for name in files:
        print('  %s' % name)

    if found:
        print('check_tarball: FAILED', file=sys.stderr)
        for problem in found:
            print('  %s' % problem, file=sys.stderr)
        return 1

    print('check_tarball: OK')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
