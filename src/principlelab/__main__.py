"""``python -m principlelab`` is ``plab``."""

from principlelab.cli import main

main()
