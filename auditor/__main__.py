"""`python -m auditor` runs the same CLI as the `portaudit` console script."""

from auditor.cli import main

main()
