"""Print the quality figures the tests recorded (`record_property("measured", ...)`), one column per
JUnit XML file: `python -m tests.margins a.xml b.xml`. Shows how far each floor is from failing on
each CPU setting (`make test-cpus`)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def measured(path: str) -> dict[str, str]:
    found = {}
    for case in ET.parse(path).iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name") == "measured":
                found[f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"] = prop.get("value", "")
    return found


def main(paths: list[str]) -> None:
    columns = [measured(p) for p in paths]
    for test in sorted(set().union(*columns)):
        print(test)
        for path, column in zip(paths, columns):
            print(f"    {path}: {column.get(test, '-')}")


if __name__ == "__main__":
    main(sys.argv[1:])
