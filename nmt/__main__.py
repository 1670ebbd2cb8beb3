"""Allows `python -m nmt` (and, later, `torchrun -m nmt`)."""

from nmt.cli import main

main()
