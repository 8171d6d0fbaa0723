# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The copyable examples of the collection's guides (docs/*.md and README.md), turned into something to run.

    docs_snippets.py playbooks COLLECTION_ROOT OUTDIR
        For each guide with examples to run, write OUTDIR/<guide>.yml: one play per YAML example that is Ansible, in
        the guide's order, its text copied line for line (a task list becomes the tasks of a play on localhost; a
        playbook is copied as it is). Print one line per YAML example: "run", "skipped: REASON" or "not Ansible".
    docs_snippets.py commands COLLECTION_ROOT
        Print the ad-hoc commands of the guides' shell examples (the lines that start with "ansible localhost"),
        one per line, as "GUIDE:LINE<TAB>COMMAND".

An example is left out only when the line right before its fence says why: <!-- docs-test: skip: REASON -->.
YAML that is not a play or a task list (requirements.yml, execution-environment.yml, AWX credential types) is
listed, not run. Rules every example must keep, checked here (exit 1, naming the example, if one does not):
  - an example that the text right before it introduces as one to run "in check mode" begins with a task that
    runs in check mode (issue 20: "Look first, in check mode:" followed by a task that discarded for real);
  - no example states a date (YYYY-MM-DD...) in a task's arguments: copied later, it would be in the past
    (issue 20: a silence whose `ends` had gone by). Use durations, or dates computed from now().
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import typing as t

import yaml

FENCE = re.compile(r'^(?P<indent>\s*)```(?P<lang>[A-Za-z0-9_+-]*)\s*$')
SKIP = re.compile(r'^\s*<!--\s*docs-test:\s*skip:\s*(?P<reason>.+?)\s*-->\s*$')
DATE = re.compile(r'\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2})?')


class Example(t.NamedTuple):
    guide: str        # docs/operating.md
    line: int         # the line of the opening fence, counted from 1
    lang: str
    text: str         # dedented by the fence's indentation
    skip: str         # the reason given, or ''
    intro: str        # the paragraph right before the fence


def guides(root: str) -> list[str]:
    docs = sorted(name for name in os.listdir(os.path.join(root, 'docs')) if name.endswith('.md'))
    return ['README.md'] + [f'docs/{name}' for name in docs]


def examples(root: str, guide: str) -> list[Example]:
    with open(os.path.join(root, guide), encoding='utf-8') as handle:
        lines = handle.read().splitlines()
    found = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group('lang'):
            i += 1
            continue
        start, indent = i, len(match.group('indent'))
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != '```':
            body.append(lines[i][indent:] if lines[i][:indent].strip() == '' else lines[i])
            i += 1
        before = lines[:start]
        skip = ''
        if before and SKIP.match(before[-1]):
            skip = SKIP.match(before[-1]).group('reason')
            before = before[:-1]
        intro: list[str] = []
        for line in reversed(before):
            if not line.strip():
                if intro:
                    break
                continue
            intro.insert(0, line.strip())
        found.append(Example(guide, start + 1, match.group('lang'), '\n'.join(body) + '\n', skip, ' '.join(intro)))
        i += 1
    return found


def kind(data: t.Any) -> str:
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        if any('rules' in item or 'sources' in item for item in data):
            return ''  # an ansible-rulebook rulebook: its plays are hosts, sources and rules
        plays = [item for item in data if 'hosts' in item or 'import_playbook' in item]
        if len(plays) == len(data):
            return 'playbook'
        if not plays:
            return 'tasks'
    return ''


def tasks_of(data: list[dict[str, t.Any]], what: str) -> list[dict[str, t.Any]]:
    if what == 'tasks':
        return data
    return [task for play in data for section in ('pre_tasks', 'tasks') for task in play.get(section) or []]


def broken_rules(example: Example, data: list[dict[str, t.Any]], what: str) -> list[str]:
    problems = []
    if 'in check mode' in example.intro.lower() and example.intro.rstrip().endswith(':'):
        first = tasks_of(data, what)[:1]
        in_check = what == 'playbook' and data[0].get('check_mode') is True
        if not in_check and not (first and first[0].get('check_mode') is True):
            problems.append('the text introduces it as a look in check mode, but its first task has no check_mode: true')
    for task in tasks_of(data, what):
        arguments = {key: value for key, value in task.items() if '.' in key}
        dated = DATE.search(yaml.safe_dump(arguments))
        if dated:
            problems.append(f'task {task.get("name")!r} states the date {dated.group(0)}, which will be in the past once '
                            'copied; use a duration or a date computed from now()')
    return problems


def play_text(example: Example, what: str) -> str:
    body = '\n'.join(line for line in example.text.splitlines() if line.strip() != '---') + '\n'
    if what == 'playbook':
        return f'# {example.guide}, line {example.line}\n{body}'
    name = f'{example.guide}, the example at line {example.line}'
    return (f'# {example.guide}, line {example.line}\n- name: {name!r}\n  hosts: localhost\n  gather_facts: false\n'
            f'  tasks:\n{textwrap.indent(body, "    ")}')


def write_playbooks(root: str, outdir: str) -> int:
    os.makedirs(outdir, exist_ok=True)
    failures = 0
    for guide in guides(root):
        plays = []
        for example in examples(root, guide):
            if example.lang != 'yaml':
                continue
            where = f'{guide}:{example.line}'
            if example.skip:
                print(f'{where}: skipped: {example.skip}')
                continue
            try:
                data = yaml.safe_load(example.text)
            except yaml.YAMLError as exc:
                print(f'{where}: FAILED: not valid YAML: {exc}')
                failures += 1
                continue
            what = kind(data)
            if not what:
                print(f'{where}: not Ansible (a file of another kind); not run')
                continue
            problems = broken_rules(example, data, what)
            for problem in problems:
                print(f'{where}: FAILED: {problem}')
            failures += len(problems)
            plays.append(play_text(example, what))
            print(f'{where}: run ({what})')
        if plays:
            text = '---\n' + '\n'.join(plays)
            yaml.safe_load(text)  # what was copied together is still one valid playbook
            target = os.path.join(outdir, guide.replace('/', '_').replace('.md', '.yml'))
            with open(target, 'w', encoding='utf-8') as handle:
                handle.write(text)
    return failures


def commands(root: str) -> None:
    for guide in guides(root):
        for example in examples(root, guide):
            if example.lang not in ('sh', 'bash', 'console') or example.skip:
                continue
            for offset, line in enumerate(example.text.splitlines(), start=1):
                command = line.strip().removeprefix('$ ')
                if command.startswith('ansible localhost '):
                    print(f'{guide}:{example.line + offset}\t{command}')


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == 'playbooks':
        return 1 if write_playbooks(argv[2], argv[3]) else 0
    if len(argv) == 3 and argv[1] == 'commands':
        commands(argv[2])
        return 0
    sys.stderr.write(__doc__ or '')
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
