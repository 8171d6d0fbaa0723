# Copyright: Temperstack alerting collection maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for the ``get-pip.py`` script that ansible-test downloads.

ansible-test bootstraps pip into the empty virtual environments it creates
for sanity tests by running ``get-pip-<version>.py`` fetched from a host that
is not reachable from our machines.  It first looks for a cached copy at
``~/.ansible/test/cache/get_pip_<version with underscores>.py``; ``make
pip-shim`` copies this file there.

ansible-test runs the script as ``__main__`` with get-pip style arguments,
for example ``--disable-pip-version-check pip==25.2 --no-setuptools
--no-wheel``.  We bootstrap pip with the standard library's ``ensurepip``
(no network needed) and then ``pip install`` the requested arguments, minus
the get-pip-only ``--no-setuptools`` and ``--no-wheel`` flags, so the
requested pip version ends up installed from the package index.
"""

from __future__ import annotations

import os
import subprocess
import sys

GET_PIP_ONLY_OPTIONS = frozenset(('--no-setuptools', '--no-wheel'))


def main(argv: list[str]) -> int:
    """Bootstrap pip with ensurepip, then install the requested packages."""
    env = dict(os.environ)
    # ansible-test points GET_PIP at this file; the real pip must not see it.
    env.pop('GET_PIP', None)

    subprocess.run(
        [sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )

    pip_args = [arg for arg in argv if arg not in GET_PIP_ONLY_OPTIONS]

    if not any(not arg.startswith('-') for arg in pip_args):
        return 0  # nothing to install beyond the bundled pip

    command = [sys.executable, '-m', 'pip', 'install', '--quiet', '--upgrade'] + pip_args

    return subprocess.run(command, check=False, env=env).returncode


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
