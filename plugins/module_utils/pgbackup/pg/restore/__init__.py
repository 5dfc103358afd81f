# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parts of a restore, one concern each; ``pg.restorer.Restorer`` puts them in order.

checks           what must hold before anything is touched: tool and server majors, the maintenance database
cluster_globals  cluster roles and tablespaces, replayed without harming what exists
staging          the staging database: create, swap in for the target, database properties, restored-backup mark
archive          pg_restore of the custom archive, streamed or unpacked for parallel and repeated passes
partial          chosen tables and schemas: definitions of everything, rows of the chosen ones
data             data-only replay into an existing schema, in one transaction
"""
