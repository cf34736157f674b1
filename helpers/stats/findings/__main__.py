"""``python -m helpers.stats.findings preregister``: record the rules in paper/preregistered_rules.md, then
commit it."""

from __future__ import annotations

import sys

from helpers.base import store
from helpers.stats.findings.preregistered import PREREGISTERED_RULES, rules_markdown


def main(arguments: list[str]) -> int:
    if arguments != ["preregister"]:
        print("usage: python -m helpers.stats.findings preregister", file=sys.stderr)
        return 2
    store.write_text(rules_markdown(), PREREGISTERED_RULES)
    print(f"wrote {PREREGISTERED_RULES}: commit it before running the study whose results these rules judge")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
