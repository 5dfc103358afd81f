#!/usr/bin/env bash
# make sanity: ansible-test sanity on a copy of this checkout, offline-capable.
#
# ansible-test only runs from a path ending in ansible_collections/<namespace>/<name> and resolves
# symlinks, so the tracked + untracked-not-ignored files are copied to build/ansible_collections/
# seawall/pgbackup (fresh on every run, so no stale files). The copy becomes its own empty git repo,
# because ansible-test lists files with `git ls-files` from the nearest .git, and this checkout's
# .git ignores build/.
#
# Environment: ANSIBLE_TEST (path to ansible-test), SANITY_PYTHON (controller, default 3.11),
# SANITY_EXTRA_PYTHONS (other versions for the compile + import tests of modules/module_utils,
# default: every installed version from 3.9 up; "none" to skip), SANITY_ARGS (extra options).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
copy="$repo/build/ansible_collections/seawall/pgbackup"
ansible_test=${ANSIBLE_TEST:-$repo/.venv/bin/ansible-test}
controller_python=${SANITY_PYTHON:-3.11}
read -r -a extra_args <<<"${SANITY_ARGS:-}"
start=$(date +%s)

# 1. a fresh copy
rm -rf "$copy"
mkdir -p "$copy"
cd "$repo"
git ls-files -z -co --exclude-standard \
  | while IFS= read -r -d '' f; do
      case "$f" in .collections/*) continue ;; esac   # the collections_path symlink for ansible.cfg
      if [[ -e "$f" || -L "$f" ]]; then printf '%s\0' "$f"; fi
    done \
  | tar --null -T - -cf - | tar -xf - -C "$copy"
git -C "$copy" init -q

# 2. the get-pip stand-in that lets `--venv` bootstrap pip without the unreachable download
#    (ansible-core 2.19 asks for pip 24.2, 2.21 for 25.2: install it under every name)
mkdir -p "$HOME/.ansible/test/cache"
for version in 24_2 25_2; do
  cp "$repo/.ci/get-pip-standin.py" "$HOME/.ansible/test/cache/get_pip_$version.py"
done

# 3. PowerShell files: pslint and validate-modules need pwsh, which cannot be installed here
excludes=()
while IFS= read -r -d '' f; do
  excludes+=(--exclude "$f")
done < <(cd "$copy" && find . -type f \( -name '*.ps1' -o -name '*.psm1' \) -printf '%P\0')
if ((${#excludes[@]})); then
  echo "sanity: excluding PowerShell files (no pwsh here): ${excludes[*]}"
fi

# 4. make pyenv's other Pythons visible as python3.X: pyenv shims only run the selected version,
#    and ansible-test passes a filtered environment (no PYENV_VERSION) to its subprocesses,
#    so link the real interpreters into a directory at the front of PATH.
pythons_dir="$repo/build/pythons"
rm -rf "$pythons_dir"
mkdir -p "$pythons_dir"
if command -v pyenv >/dev/null 2>&1; then
  pyenv_root=$(pyenv root)
  for v in 3.8 3.9 3.10 3.11 3.12 3.13 3.14; do
    if ! "python$v" -c '' >/dev/null 2>&1; then
      candidate=$(find "$pyenv_root/versions" -maxdepth 3 -path "*/versions/$v.*/bin/python$v" 2>/dev/null | sort -V | tail -n 1)
      if [[ -n "$candidate" ]]; then ln -s "$candidate" "$pythons_dir/python$v"; fi
    fi
  done
fi
export PATH="$pythons_dir:$PATH"

cd "$copy"
rc=0
echo "sanity: all tests, Python $controller_python"
"$ansible_test" sanity --venv --python "$controller_python" --color no \
  ${excludes[@]+"${excludes[@]}"} ${extra_args[@]+"${extra_args[@]}"} || rc=$?

extra_pythons=${SANITY_EXTRA_PYTHONS:-auto}
if [[ "$extra_pythons" == auto ]]; then
  extra_pythons=""
  for v in 3.9 3.10 3.12 3.13; do
    if [[ "$v" != "$controller_python" ]] && "python$v" -c '' >/dev/null 2>&1; then
      extra_pythons="$extra_pythons $v"
    fi
  done
fi
if [[ "$extra_pythons" != none ]]; then
  for v in $extra_pythons; do
    echo "sanity: compile + import tests, Python $v"
    "$ansible_test" sanity --venv --python "$v" --color no --test compile --test import \
      ${excludes[@]+"${excludes[@]}"} || rc=$?
  done
fi

echo "sanity: finished in $(($(date +%s) - start)) s (rc=$rc)"
exit "$rc"
