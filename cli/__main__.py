"""`python -m cli`: the `viraliency` command without installing the package."""

from cli.main import main

main()
