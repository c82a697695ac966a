"""`python -m auditor` runs the same CLI as the `portaudit` console script."""

from auditor.auditcmd import main

main()
