"""`portaudit fix` and `portaudit rollback`: the only part of portaudit that writes.

- `plan.py`: pure; findings -> wanted values, validation, the plan and its diff.
- `prepare.py`: reads the host (runtime values, boot model, namespaces) to build a plan.
- `target.py`: which files may be written (inside --root) and a simulated boot of the result.
- `netns.py`: which network namespace we are in, and which keys are per-namespace.
- `apply.py`: lock, snapshot, runtime write + read-back, atomic persist, verify, restore;
  and rollback.
- `journal.py`: the change journal and backups under `<root>/var/lib/portaudit/`.
"""
