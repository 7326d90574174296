"""Every code block of README.md and docs/*.md is run, so the docs cannot rot.

* ```python blocks are executed as they stand: each page's blocks in order, as one script in a fresh
  interpreter in a temporary folder (like a reader pasting them into one session).  ```text blocks are
  not code (signatures, transcripts, layouts).
* shell blocks (```bash, ```sh or unlabelled): every ``spikevit ...`` command line is parsed by the real
  command-line parser and its option values checked (an unknown flag, a renamed sub-command or a value that
  the option refuses fails the test); ``python benchmarks/...`` lines must name an existing script whose
  flags exist in it; ``torchrun ... spikevit ...`` lines are checked like ``spikevit`` ones.  Those commands
  are not run here: most take minutes to hours, or a GPU.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from unittest import mock
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)\s*\n(.*?)^```\s*$", re.S | re.M)
SHELL = {"", "bash", "sh", "shell", "console"}
NOT_OURS = ("tar ", "pip ", "git ", "cd ", "export ", "ls ", "cat ", "mkdir ", "curl ", "wget ", "nvidia-smi",
            ".ci/setup", ".ci/run", "source ", "# ")


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1).lower(), m.group(2)) for m in FENCE.finditer(page.read_text())]


def shell_commands(text: str) -> list[str]:
    """Logical command lines: continuations joined, comments and prompts removed, `&&` chains split."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"\s+#.*$", "", line)          # trailing comment
        out += [part.strip() for part in line.split("&&") if part.strip()]
    return out


def check_command(line: str) -> None:
    from spikevit.cli.main import build_parser

    words = shlex.split(line.replace("$(which spikevit)", "spikevit"))
    words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]      # VAR=value prefixes
    if not words or line.startswith(NOT_OURS) or words[0] in ("cd", "export", "tar", "pip", "git") \
            or words[0].endswith("/pip"):
        return
    if ".venv/bin/spikevit" in words[0]:
        words[0] = "spikevit"
    if words[0] == "torchrun":
        words = words[words.index("spikevit"):] if "spikevit" in words else words
    if words[0] == "spikevit":
        # parsed as on a GPU machine: docs may show --device cuda
        with mock.patch("torch.cuda.is_available", return_value=True), \
                mock.patch("torch.cuda.device_count", return_value=8):
            try:
                build_parser().parse_args(words[1:])
            except SystemExit as exc:
                raise AssertionError(f"the parser refuses: {line}") from exc
        return
    if words[0] in ("python", "python3") or words[0].endswith("/python"):
        if words[1] == "-m":
            assert words[2].startswith(("spikevit", "pytest", "venv", "pip")), line
            return
        script = ROOT / words[1]
        assert script.is_file(), f"no such script: {words[1]}"
        text = script.read_text()
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert f'"{flag}"' in text or f"'{flag}'" in text, f"{words[1]} has no option {flag}"
        return
    raise AssertionError(f"unknown command in a docs block (add it to NOT_OURS if it is not ours): {line}")


CASES = [(page, i, lang, code) for page in PAGES for i, (lang, code) in enumerate(blocks(page))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, tmp_path):
    """The page's python blocks, in order, as one script in a fresh interpreter (no state leaks between pages)."""
    code = [c for lang, c in blocks(page) if lang == "python"]
    if not code:
        pytest.skip("no python block")
    script = tmp_path / f"{page.stem}_blocks.py"
    script.write_text("\n\n".join(code))
    env = dict(os.environ, SPIKEVIT_QUIET="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{page.name}: python blocks fail:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_commands_parse(page):
    lines = [line for lang, c in blocks(page) if lang in SHELL for line in shell_commands(c)]
    if not lines:
        pytest.skip("no shell block")
    for line in lines:
        check_command(line)


def test_pages_speak_of_the_project_only():
    for page in PAGES:
        text = page.read_text()
        for bad in ("/work/", "load average", "heavily shared", "session 1", "OMP_NUM_THREADS=1 only"):
            assert bad not in text, f"{page.name} mentions {bad!r}"


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    first = [b for _, b in blocks(ROOT / "README.md")][0]
    assert ".ci/setup" in first and ".ci/run" in first
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
