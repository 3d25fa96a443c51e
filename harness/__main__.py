"""``python -m dfb_ood.harness`` is the same as the ``harness`` command."""

from dfb_ood.harness.cli import main

main()
