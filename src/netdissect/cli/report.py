"""`netdissect report RUN_DIR` (being written)."""


def add_parser(sub) -> None:
    return None
