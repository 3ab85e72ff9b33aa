"""``python -m aicloud`` is the CLI."""

from aicloud.cli.main import main

main()
