# Copyright: Temperstack alerting collection maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Put tools/get_pip_shim.py where ansible-test looks for its cached get-pip script.

Run this with the Python of a virtual environment that has ansible-core
installed (``make pip-shim`` does it for every test venv).  It asks that
ansible-test which pip version(s) it bootstraps into its managed virtual
environments and copies the shim to
``~/.ansible/test/cache/get_pip_<version with dots as underscores>.py``,
exactly the path ansible_test/_util/target/setup/requirements.py checks
before it tries to download get-pip from the internet.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import types


def pip_versions() -> set[str]:
    """Return the pip versions the installed ansible-test bootstraps."""
    # pylint: disable=import-outside-toplevel
    from ansible_test._internal.constants import SUPPORTED_PYTHON_VERSIONS
    from ansible_test._internal.python_requirements import get_venv_packages

    return {
        get_venv_packages(types.SimpleNamespace(version=version))['pip']
        for version in SUPPORTED_PYTHON_VERSIONS
    }


def main() -> int:
    """Copy the shim into ansible-test's cache for every pip version it needs."""
    shim = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'get_pip_shim.py')
    cache_dir = os.path.expanduser('~/.ansible/test/cache')
    os.makedirs(cache_dir, exist_ok=True)

    for version in sorted(pip_versions()):
        target = os.path.join(cache_dir, 'get_pip_%s.py' % version.replace('.', '_'))

        if os.path.exists(target) and filecmp.cmp(shim, target, shallow=False):
            print('pip-shim: %s is up to date' % target)
            continue

        shutil.copyfile(shim, target)
        print('pip-shim: installed %s (pip %s)' % (target, version))

    return 0


if __name__ == '__main__':
    sys.exit(main())
