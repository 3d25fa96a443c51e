"""``python -m dfb_ood`` is the same as the ``harness`` command."""

from dfb_ood.harness.cli import main

main()
