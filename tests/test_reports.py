"""The one results format: a Report written to disk reads back as the same document."""
import csv
import json

from spikevit.reports import Report, write_report


def test_report_write_round_trip(tmp_path):
    rows = [{"k": 4, "acc1": 71.25}, {"k": 12, "acc1": 72.5, "note": "x"}]
    rep = Report("spikevit demo --k 4", {"k": 4}, {"acc1": 72.5}, {"sweep": rows}, title="demo", notes="n")
    path = rep.write(tmp_path / "out.json")
    assert rep.path == path
    doc = json.loads(path.read_text())
    assert doc["command"] == "spikevit demo --k 4"
    assert doc["config"] == {"k": 4} and doc["results"] == {"acc1": 72.5}
    assert doc["tables"]["sweep"] == rows
    with open(tmp_path / "out.sweep.csv", newline="") as fh:
        back = list(csv.DictReader(fh))
    assert [r["acc1"] for r in back] == ["71.25", "72.5"] and back[1]["note"] == "x"
    md = (tmp_path / "out.md").read_text()
    assert md.startswith("# demo") and "| k | acc1 | note |" in md
    assert rep.to_dict()["tables"] == doc["tables"]


def test_report_write_equals_write_report(tmp_path):
    args = ("cmd", {"a": 1}, {"b": 2.0}, {"t": [{"x": 1}]})
    Report(*args).write(tmp_path / "a.json")
    write_report(tmp_path / "b.json", *args)
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    a.pop("created"), b.pop("created")
    assert a == b
