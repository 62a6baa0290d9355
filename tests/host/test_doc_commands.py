"""Every shell command README.md and docs/ show runs as written on a fresh clone: the programs are
the project's (or named system tools), every `tools/X.py` option exists in that tool's --help,
`make` targets exist, repository files named exist, and the harmless ones are run here.
(The provisioning block is run whole by test_provision_boot.py.)"""
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# a fenced block, optionally indented, with its language and the HTML comment right before it
BLOCK = re.compile(r"(<!--[^\n]*-->\n)?^([ \t]*)```(\w*)[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
COMMANDISH = re.compile(r"^\s*(python3|\.venv/|make |mpremote|cp )", re.M)
OUTSIDE = "<!-- commands: outside the project"   # a block run in another tree (e.g. MicroPython's ESP32 port)
SYSTEM = {"export", ".", "git", "openssl", "mosquitto_passwd", "kill", "cd", "psql", "createdb", "curl", "chromium"}
PLACEHOLDER = "..."


def blocks():
    """(doc, line number, text) of each shell block: fenced as sh/bash/shell, or unlabelled holding commands."""
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        for m in BLOCK.finditer(text):
            before, lang, body = m.group(1) or "", m.group(3), m.group(4)
            if lang not in ("sh", "bash", "shell", "") or (not lang and not COMMANDISH.search(body)):
                continue
            if before.startswith(OUTSIDE):
                continue
            yield doc, text[:m.start(4)].count("\n") + 1, body


def commands(body):
    """Each command of a block: continuation lines joined, comments dropped, as argv."""
    lines = [line.strip() for line in body.replace("\\\n", " ").splitlines()]
    for line in lines:
        argv = shlex.split(line, comments=True)
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
            argv = argv[1:]   # environment assignments
        if argv:
            yield line, argv


ALL = [(doc, n, line, argv) for doc, n, body in blocks() for line, argv in commands(body)]
_help = {}


def tool_help(tool, sub=None):
    """The tool's --help text (of its subcommand `sub`); None when `sub` is not one."""
    key = (tool, sub)
    if key not in _help:
        argv = [sys.executable, os.path.join(ROOT, tool)] + ([sub] if sub else []) + ["--help"]
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
        usage = "usage: %s%s" % (os.path.basename(tool), " " + sub if sub else "")
        assert sub or r.returncode == 0, "%s --help: %s" % (" ".join(argv[1:]), r.stderr[-500:])
        _help[key] = r.stdout if r.returncode == 0 and r.stdout.startswith(usage) else None
    return _help[key]


def make_targets():
    with open(os.path.join(ROOT, "Makefile")) as f:
        return set(t for m in re.finditer(r"^([A-Za-z][\w.-]*(?: [A-Za-z][\w.-]*)*):(?!=)", f.read(), re.M)
                   for t in m.group(1).split())


def test_the_docs_show_commands():
    docs = set(doc for doc, _, _, _ in ALL)
    assert {"README.md", "docs/operations.md", "docs/ota.md", "docs/simulator.md", "docs/technician.md"} <= docs
    assert len(ALL) >= 20


def check(argv, targets):
    """None when the command can run as written on a fresh clone (after `make setup`), else why not."""
    prog, args = argv[0], argv[1:]
    if prog == "make" and args[:1] == ["-C"]:
        return None if args[1].startswith("../") else "make -C %s: a folder of the project has no Makefile" % args[1]
    if prog == "make":
        missing = [a for a in args if not a.startswith("-") and "=" not in a and not a.startswith("[")
                   and a not in targets]
        return "no make target %s" % missing if missing else None
    if prog in ("python3", ".venv/bin/python"):
        if args[:1] == ["-c"]:
            return None
        tool = args[0]
        if not re.fullmatch(r"tools/\w+\.py", tool) or not os.path.exists(os.path.join(ROOT, tool)):
            return "no such tool %s" % tool
        rest = args[1:]
        sub = rest[0] if rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]) and tool_help(tool, rest[0]) else None
        text = tool_help(tool, sub)
        rest = rest[1:] if sub else rest
        unknown = [a.split("=")[0] for a in rest if a.startswith("--")
                   and not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(a.split("=")[0]), text)]
        if unknown:
            return "%s%s has no option %s" % (tool, " " + sub if sub else "", unknown)
        for a in rest:   # the repository's own files given as arguments
            if re.match(r"(demo|tests|board_configs)/", a) and not os.path.exists(os.path.join(ROOT, a)):
                return "no file %s in the repository" % a
        return None
    if prog.startswith("out/mp32/"):   # the board-like interpreters
        return None if "mp32" in targets else "%s: no make mp32 builds it" % prog
    if prog.startswith(".venv/bin/"):
        return None if os.path.exists(os.path.join(ROOT, prog)) else "%s is not made by make setup" % prog
    if prog == "mpremote":
        return "bare mpremote: a fresh clone has it as .venv/bin/mpremote (make setup)"
    if prog == "cp":
        return None if os.path.exists(os.path.join(ROOT, args[0])) else "no file %s to copy" % args[0]
    if prog in SYSTEM:
        return None
    return "unknown program %r: use the project's tools, make targets or .venv/bin/ programs" % prog


def test_every_documented_command_names_what_exists():
    targets = make_targets()
    wrong = ["%s:%d: %s -> %s" % (doc, n, line, why) for doc, n, line, argv in ALL
             for why in [check(argv, targets)] if why]
    assert not wrong, "\n".join(wrong)


def test_the_checks_catch_what_a_fresh_clone_cannot_run():
    targets = make_targets()
    assert "no make target" in check(["make", "deploy-everything"], targets)
    assert "has no option ['--no-such-option']" in check(["python3", "tools/backend.py", "--no-such-option", "x"],
                                                          targets)
    assert "has no option" in check(["python3", "tools/bundle.py", "keygen", "--version", "1"], targets)
    assert check(["python3", "tools/bundle.py", "keygen", "--out", "k.pem"], targets) is None
    assert "no such tool" in check(["python3", "tools/nothing.py"], targets)
    assert "bare mpremote" in check(["mpremote", "connect", "/dev/ttyUSB0"], targets)
    assert "no file" in check([".venv/bin/python", "tools/sim.py", "demo/none.json"], targets)
    assert "unknown program" in check(["pip", "install", "x"], targets)
    assert "has no Makefile" in check(["make", "-C", "firmware"], targets)
    assert check(["make", "-C", "../micropython/mpy-cross"], targets) is None


@pytest.mark.parametrize("doc,line", sorted(set((doc, line) for doc, _, line, argv in ALL
                                                 if argv[:2] == ["python3", "-c"]
                                                 or argv[:1] == ["cp"])))
def test_the_harmless_commands_run_as_written(doc, line, tmp_path):
    """Commands that change nothing outside a fresh copy of their inputs run here, in a scratch directory."""
    argv = shlex.split(line, comments=True)
    if argv[0] == "cp":
        argv[1] = os.path.join(ROOT, argv[1])
    r = subprocess.run(argv, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (doc, line, r.stderr)


def test_the_readme_small_heap_run_boots_and_charges(tmp_path):
    """README's `--mpy --heapsize` line, on a short session instead of my.json: the size it names is enough."""
    line = [argv for doc, _, _, argv in ALL if doc == "README.md" and "--heapsize" in argv][0]
    scenario = tmp_path / "my.json"
    scenario.write_text('{"board": "sim", "start": "2026-03-02T07:00:00Z", "cards": {"a": "04A1B2C3D4E5F6"}, '
                        '"allow": ["a"], "events": [{"t": 5, "plug": true}, {"t": 10, "tap": "a"}, '
                        '{"t": 15, "ev_current_a": 16}, {"t": 120, "tap": "a"}], "end": 130}')
    argv = [sys.executable if a == ".venv/bin/python" else str(scenario) if a == "my.json" else a for a in line]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-800:] + r.stderr[-800:]
    assert "MemoryError" not in r.stdout + r.stderr and "session_end" in r.stdout
