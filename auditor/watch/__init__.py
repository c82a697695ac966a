"""`portaudit watch`: a live view of port use, for an operator in the middle of an incident.

sample.py reads the host (the same sock_diag walks as the audit, nothing per socket kept),
view.py turns two samples into rows (rates, time until the range runs out; pure), tui.py draws
them with rich and reads keys, run.py schedules refreshes so a slow one never piles up.
"""
