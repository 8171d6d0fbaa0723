# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The private core's shape: imports go one way, and the ledger's interface knows none of its backends."""

from __future__ import annotations

import ast
import pathlib

PLUGIN_UTILS = pathlib.Path(__file__).resolve().parents[4] / 'plugins' / 'plugin_utils'
BACKENDS = {'_ledger_sqlite', '_ledger_postgres', '_ledger_open'}


def imports_of(path: pathlib.Path) -> set[str]:
    """The plugin_utils modules ``path`` imports, at any depth of its code (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ''
            if node.level == 1:
                found.update([module.split('.')[0]] if module else [alias.name for alias in node.names])
            elif module.startswith('ansible_collections.temperstack.alerting.plugins.plugin_utils'):
                rest = module.split('plugin_utils', 1)[1].lstrip('.')
                found.update([rest.split('.')[0]] if rest else [alias.name for alias in node.names])
    return found


def graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) for path in PLUGIN_UTILS.glob('_*.py')}


def test_the_ledger_interface_imports_no_backend():
    assert not imports_of(PLUGIN_UTILS / '_ledger.py') & BACKENDS


def test_only_the_opener_knows_both_backends():
    knows_both = [name for name, imported in graph().items() if {'_ledger_sqlite', '_ledger_postgres'} <= imported | {name}]
    assert knows_both == ['_ledger_open']


def test_no_private_name_crosses_between_ledger_files():
    for path in PLUGIN_UTILS.glob('_ledger*.py'):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('_ledger'):
                private = [alias.name for alias in node.names if alias.name.startswith('_')]
                assert not private, f'{path.name} imports {private} from {node.module}'


def test_plugin_utils_modules_import_each_other_without_a_cycle():
    edges = graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, 'import cycle: ' + ' -> '.join(visiting[visiting.index(name):] + [name])
        visiting.append(name)
        for other in sorted(edges.get(name, ())):
            if other in edges:
                visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(edges):
        visit(name)


def test_no_plugin_file_is_over_800_lines():
    plugins = PLUGIN_UTILS.parent
    long_files = {str(path.relative_to(plugins)): n for path in plugins.rglob('*.py')
                  if (n := len(path.read_text(encoding='utf-8').splitlines())) > 800}
    assert not long_files
