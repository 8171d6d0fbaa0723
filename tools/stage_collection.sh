#!/usr/bin/env bash
# Copy the collection's source tree to DEST (a fresh directory).
#
# Usage: tools/stage_collection.sh DEST
#
# ansible-test only works from a directory whose path ends in
# ansible_collections/<namespace>/<name>, so `make stage` copies the repo to
# build/collections/ansible_collections/temperstack/alerting with this script.
#
# Inside a git work tree the file list is what git knows about: tracked files
# plus untracked files that .gitignore does not exclude (so new files a
# developer has not `git add`ed yet are tested too, while virtualenvs, build
# output and caches never are). Outside git, everything is copied except the
# same kinds of local clutter.
set -euo pipefail

dest=${1:?usage: $0 DEST}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

rm -rf "$dest"
mkdir -p "$dest"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # --deduplicate: a file that is both tracked and modified is listed once.
    # Files deleted from the work tree but still in the index are skipped.
    git ls-files -z --cached --others --exclude-standard --deduplicate \
        | while IFS= read -r -d '' path; do
            case "$path" in
                build/*|.venv*|tests/output/*) continue ;;
            esac
            if [[ -e "$path" || -L "$path" ]]; then
                printf '%s\0' "$path"
            fi
        done \
        | tar --null --no-recursion -T - -cf - \
        | tar -xf - -C "$dest"
else
    tar -cf - \
        --exclude=./.git --exclude='./.venv*' --exclude=./build \
        --exclude=./tests/output --exclude=__pycache__ --exclude='*.pyc' \
        --exclude=.pytest_cache --exclude=.hypothesis --exclude=.mypy_cache \
        --exclude=.ruff_cache --exclude=.tox --exclude=.cache \
        . \
        | tar -xf - -C "$dest"
fi

# ansible-test picks the file list of a collection from the nearest enclosing
# git work tree (ansible_test/_internal/data.py walks up from the collection
# root looking for .git). The staged copy lives inside this repo's build/,
# which .gitignore hides, so without a repository of its own ansible-test
# would see no files at all ("All targets skipped"). Give the copy its own
# index; no commit is needed.
if command -v git >/dev/null 2>&1; then
    git -C "$dest" init --quiet
    git -C "$dest" add --all
fi

echo "stage: $(find "$dest" -path "$dest/.git" -prune -o -type f -print | wc -l) files copied to $dest"
