"""The bad-input table: every case of tests/test_bad_inputs.py with its exit code and the message it printed.

    python benchmarks/bad_inputs_table.py            # -> results/trust/bad_inputs.{json,md,csv}

Runs the test file once (pytest) and collects what each case recorded; a case that fails is listed as such.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spikevit.reports import write_report

ROOT = Path(__file__).resolve().parents[1]


class Collect:
    def __init__(self):
        self.rows = []

    def pytest_runtest_logreport(self, report):
        if report.when != "call":
            return
        props = dict(report.user_properties)
        case = report.nodeid.split("[", 1)[-1].rstrip("]")
        kind = "CLI" if "exit_code" in props else "library"
        self.rows.append({"kind": kind, "case": case, "command": props.get("command", ""),
                          "exit_code": props.get("exit_code", ""), "message": props.get("message", ""),
                          "inputs_unchanged": props.get("inputs_unchanged", ""), "passed": report.passed})


def main() -> int:
    collect = Collect()
    code = pytest.main([str(ROOT / "tests" / "test_bad_inputs.py"), "-q", "-p", "no:cacheprovider"],
                       plugins=[collect])
    rows = collect.rows
    out = ROOT / "results" / "trust" / "bad_inputs.json"
    write_report(out, "python benchmarks/bad_inputs_table.py", {"test_file": "tests/test_bad_inputs.py"},
                 {"cases": len(rows), "passed": sum(r["passed"] for r in rows),
                  "cli_exit_2": sum(r["exit_code"] == 2 for r in rows if r["kind"] == "CLI")},
                 {"bad inputs": rows}, title="Bad input: exit code and message of every case",
                 notes="Each CLI case must exit with code 2 and print one line naming the problem, with no "
                       "traceback, leaving every input file byte-identical (sha256 before and after) and no "
                       "*.tmp file behind; each library case must raise a SpikevitError naming the argument.")
    print(f"{sum(r['passed'] for r in rows)}/{len(rows)} cases pass; table in {out.with_suffix('.md')}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
