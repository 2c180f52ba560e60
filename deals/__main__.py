"""`python -m deals ...` is the `deals` command."""

from deals.cli import main

main()
