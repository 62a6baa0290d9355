"""The docs run tools as `python3 tools/X.py`: a Python without the project's packages hands the
tool over to .venv/bin/python (tools/packages.py), or says to run `make setup`."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, ".venv")
PROBE = ("import os, sys\n"
         "sys.path.insert(0, %r)\n"
         "from packages import require\n"
         "require(%s)\n"
         "import paho\n"
         "print('ran in', os.path.realpath(sys.prefix), sys.argv[1:])\n")


def _base_python():
    """The interpreter the venv was made from, without site-packages (-S): it cannot import paho."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3")


def test_a_python_without_the_packages_reruns_the_tool_under_the_venv(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE % (os.path.join(ROOT, "tools"), '"paho"'))
    without = subprocess.run([_base_python(), "-S", "-c", "import paho"], capture_output=True, text=True)
    assert without.returncode != 0 and "paho" in without.stderr          # the package is not there
    r = subprocess.run([_base_python(), "-S", str(script), "--an", "argument"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ran in %s ['--an', 'argument']" % os.path.realpath(VENV)


def test_without_a_venv_the_tool_says_to_run_make_setup(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(os.path.join(ROOT, "tools", "packages.py"), tools / "packages.py")   # a clone before `make setup`
    script = tmp_path / "probe.py"
    script.write_text(PROBE % (str(tools), '"no_such_package_here"'))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert "probe.py needs no_such_package_here: run `make setup` in %s first" % tmp_path in r.stderr


def test_the_documented_tools_start_with_the_plain_python3():
    for tool in ("backend.py", "report.py", "ocpp_bridge.py", "demo.py", "chaos.py"):
        r = subprocess.run([_base_python(), "-S", os.path.join(ROOT, "tools", tool), "--help"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("usage: %s" % tool), (tool, r.stderr[-300:])
