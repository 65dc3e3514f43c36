"""`python -m newsletter`, the same as the `newsletter` command."""

from .cli import app

app(prog_name="newsletter")
