#!/usr/bin/env python3
"""Filter journal entries (journalctl -o json on stdin) by field.

    journalctl -u UNIT --since ... -o json | journal.py OUTPUT [FIELD=VALUE...]

OUTPUT is one of:
  cat     each matching entry's MESSAGE
  json    each matching entry as it came (one JSON object a line)
  count   how many entries match
  FIELD   that field of each matching entry ("" where it is missing)

Every FIELD=VALUE must hold (AND). The matching is done here, not by
journalctl: journalctl 252 combining -u with field matches returned an
entry of another process than the _PID= it was given, and with
--after-cursor it missed entries it shows without matches.
"""

import json
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    output, wanted = sys.argv[1], []
    for arg in sys.argv[2:]:
        field, sep, value = arg.partition("=")
        if not sep:
            sys.exit(f"journal.py: {arg!r} is not FIELD=VALUE")
        wanted.append((field, value))
    count = 0
    for line in sys.stdin:
        entry = json.loads(line)
        if any(str(entry.get(f)) != v for f, v in wanted):
            continue
        count += 1
        if output == "cat":
            print(entry.get("MESSAGE", ""))
        elif output == "json":
            print(line, end="")
        elif output != "count":
            print(entry.get(output, ""))
    if output == "count":
        print(count)


if __name__ == "__main__":
    main()
