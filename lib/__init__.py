"""The machinery, one concern per folder, in floors: a folder imports only folders on the floors
below it, and the components of one floor import none of each other.

FLOORS lists them bottom first; tests/test_layout.py checks every import against it, and
scripts/architecture.py draws docs/architecture.md's house from it and from each folder's own
docstring."""

FLOORS = (
    ("runtime",),
    ("optim", "pruning", "convert", "measure"),
    ("adamwprune",),
    ("study",),
    ("classify",),
    ("train",),
    ("config",),
)
