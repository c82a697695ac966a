"""`portaudit fix` and `portaudit rollback`: the only part of portaudit that writes.

- `command.py`: the commands as the operator runs them: checks first, questions, plan, effect.
- `plan.py`: pure; which failing findings this run fixes, the plan and its diff.
- `keys.py`: the typed table of keys `fix` may write; every value is checked against it.
- `proposals.py`: the value for each key, from the facts (widening reserves listeners' ports).
- `prepare.py`: reads the host (runtime values, boot model, namespaces) to build a plan.
- `target.py`: which files may be written (inside --root) and a simulated boot of the result.
- `netns.py`: which network namespace we are in, and which keys it may write.
- `effect.py`: each fixed rule's findings before and after, measured again.
- `apply.py`: lock, snapshot, runtime write + read-back, atomic persist, verify, restore;
  and rollback.
- `journal.py`: the change journal and backups under `<root>/var/lib/portaudit/`.
- `history.py`: the kept change sets, and which one `rollback` may undo.
"""
