"""Packages of the seawall-pgbackup distribution (metadata lives in pyproject.toml).

The import package ``seawall_pgbackup`` is the directory plugins/module_utils/pgbackup; every
directory below it that has an ``__init__.py`` becomes a subpackage (seawall_pgbackup.store, ...).
"""
from __future__ import annotations

import os

from setuptools import setup

ENGINE_PACKAGE = 'seawall_pgbackup'
ENGINE_DIR = os.path.join('plugins', 'module_utils', 'pgbackup')


def engine_packages():
    """Return the engine package and all of its subpackages, by import name."""
    packages = []
    for directory, subdirs, files in os.walk(ENGINE_DIR):
        subdirs[:] = sorted(d for d in subdirs if d != '__pycache__')
        if '__init__.py' not in files:
            subdirs[:] = []
            continue
        relative = os.path.relpath(directory, ENGINE_DIR)
        packages.append(ENGINE_PACKAGE if relative == '.' else ENGINE_PACKAGE + '.' + relative.replace(os.sep, '.'))
    return packages


setup(
    packages=engine_packages(),
    package_dir={ENGINE_PACKAGE: ENGINE_DIR},
)
