"""One results format for every command that measures something.

A result is a JSON document ``{"command", "config", "results", "tables",
"created"}``; :func:`write_report` writes it, plus one markdown file holding
every table (and each table as CSV), next to the requested JSON path.
Tables are lists of row dicts with the same keys.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spikevit.validation import atomic_write_text


def _jsonable(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item):
        try:
            return x.item()
        except (ValueError, RuntimeError):
            pass
    return x


def markdown_table(rows: list[dict], floatfmt: str = "{:.4g}") -> str:
    """Render rows (dicts with the same keys) as a GitHub markdown table."""
    if not rows:
        return "(empty)\n"
    keys = list(rows[0].keys())
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]

    def fmt(v):
        if isinstance(v, float):
            return floatfmt.format(v)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_report(json_path: str | Path, command: str, config: dict, results: dict,
                 tables: dict[str, list[dict]] | None = None, title: str | None = None,
                 notes: str | None = None, figures: list[str] | None = None) -> Path:
    """Write ``json_path`` (+ ``.md`` and one ``.csv`` per table beside it), each file atomically."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tables = tables or {}
    doc = {
        "command": command,
        "config": _jsonable(config),
        "results": _jsonable(results),
        "tables": _jsonable(tables),
        "figures": figures or [],
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    stem = json_path.with_suffix("")
    md = [f"# {title or command}", "", f"Command: `{command}`", ""]
    if notes:
        md += [notes, ""]
    for name, rows in tables.items():
        rows = _jsonable(rows)
        md += [f"## {name}", "", markdown_table(rows)]
        fh = io.StringIO(newline="")
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        atomic_write_text(f"{stem}.{_slug(name)}.csv", fh.getvalue())
    for fig in figures or []:
        md += [f"![{Path(fig).stem}]({Path(fig).name})", ""]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md))
    return json_path


@dataclass
class Report:
    """What a method's library ``run(params)`` returns: the same fields :func:`write_report` writes.

    ``command`` is the command line that reproduces it, ``config`` the parameters (a dataclass as a dict),
    ``results`` the headline numbers, ``tables`` lists of row dicts, ``figures`` paths of written plots.
    """

    command: str
    config: dict
    results: dict
    tables: dict[str, list[dict]] = field(default_factory=dict)
    title: str | None = None
    notes: str | None = None
    figures: list[str] = field(default_factory=list)
    path: Path | None = None          # where :meth:`write` last wrote it

    def write(self, json_path: str | Path) -> Path:
        """Write the JSON (+ markdown and CSVs beside it); remember and return the path."""
        self.path = write_report(json_path, self.command, self.config, self.results, self.tables,
                                 title=self.title, notes=self.notes, figures=self.figures)
        return self.path

    def to_dict(self) -> dict:
        return {"command": self.command, "config": _jsonable(self.config), "results": _jsonable(self.results),
                "tables": _jsonable(self.tables), "figures": list(self.figures)}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no screen needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it to ``path`` (creating the folder) and close it; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
