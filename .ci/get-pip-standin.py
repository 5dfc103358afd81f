"""Offline stand-in for the get-pip.py bootstrap script that `ansible-test --venv` downloads.

ansible-test fetches get-pip from a host we cannot reach, but first looks in
~/.ansible/test/cache/get_pip_<version>.py (24_2 for ansible-core 2.19, 25_2 for 2.21).
`make sanity` copies this file there. ansible-test runs it with the new venv's interpreter as
`python <this file> --disable-pip-version-check pip==<version> [--no-setuptools] [--no-wheel]`.

Like get-pip, it installs the requested pip into that interpreter, but from the package index
(PyPI, through the machine's pip configuration) instead of an embedded copy:
1. if the interpreter has no pip yet, seed one with the standard library's ensurepip, or, where
   ensurepip is missing, with the pip wheel downloaded from PyPI;
2. `python -m pip install --upgrade <the requested packages>`;
3. honour --no-setuptools / --no-wheel by removing what the seeding step brought along.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request

PYPI_JSON = 'https://pypi.org/pypi/pip/json'


def run(*args):
    """Run a command with this interpreter, failing loudly."""
    subprocess.check_call([sys.executable] + list(args))


def has_module(name):
    """Tell whether this interpreter can import the named module (checked in a fresh process)."""
    return subprocess.call([sys.executable, '-c', 'import %s' % name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def seed_pip_from_pypi(workdir):
    """Download the newest pip wheel from PyPI and return its path (a wheel runs as a zip app)."""
    with urllib.request.urlopen(PYPI_JSON, timeout=60) as response:
        release = json.load(response)
    for item in release['urls']:
        if item['packagetype'] == 'bdist_wheel':
            path = os.path.join(workdir, item['filename'])
            urllib.request.urlretrieve(item['url'], path)
            return path
    raise SystemExit('get-pip stand-in: no pip wheel found on PyPI')


def main():
    """Install pip (and whatever else was asked for) into this interpreter's environment."""
    args = sys.argv[1:]
    no_setuptools = '--no-setuptools' in args
    no_wheel = '--no-wheel' in args
    args = [arg for arg in args if arg not in ('--no-setuptools', '--no-wheel')]
    had_setuptools = has_module('setuptools')
    had_wheel = has_module('wheel')

    with tempfile.TemporaryDirectory(prefix='get-pip-standin-') as workdir:
        if has_module('pip'):
            pip = ['-m', 'pip']
        elif has_module('ensurepip'):
            run('-m', 'ensurepip', '--default-pip')
            pip = ['-m', 'pip']
        else:
            pip = [os.path.join(seed_pip_from_pypi(workdir), 'pip')]

        run(*(pip + ['install', '--upgrade'] + args))

    remove = []
    if no_setuptools and not had_setuptools and has_module('setuptools'):
        remove.append('setuptools')
    if no_wheel and not had_wheel and has_module('wheel'):
        remove.append('wheel')
    if remove:
        run('-m', 'pip', 'uninstall', '--yes', '--disable-pip-version-check', *remove)


if __name__ == '__main__':
    main()
