"""A benchmark run killed outright (``timeout -s KILL``) leaves nothing behind for long: the next run
kills the processes it started (and theirs), removes its network namespaces and folders."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tools.bench import leftovers

CAN_NETNS = os.geteuid() == 0 and shutil.which("ip") is not None


def _killed_run(tmp_path: Path, namespace: str | None) -> tuple[subprocess.Popen, Path, int]:
    """A run that records a folder, a grandchild process and maybe a namespace, then is SIGKILLed."""
    folder = tmp_path / "work"
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        from pathlib import Path
        from tools.bench import leftovers
        with leftovers.recorded(Path({str(tmp_path / 'runs')!r})):
            Path({str(folder)!r}).mkdir()
            leftovers.note("dirs", {str(folder)!r})
            ns = {namespace!r}
            if ns:
                leftovers.note("namespaces", ns)
                subprocess.run(["ip", "netns", "add", ns], check=True)
            # a child in its own session, as Procs starts them, which starts one of its own
            child = subprocess.Popen([sys.executable, "-c", "import subprocess, time; "
                                      "subprocess.Popen(['sleep', '300']); time.sleep(300)"],
                                     start_new_session=True)
            print(child.pid, flush=True)
            time.sleep(300)
    """)
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[2])
    child = int(run.stdout.readline())  # type: ignore[union-attr]
    time.sleep(0.5)  # the grandchild is started
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    return run, folder, child


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _marked(run_id_prefix: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"{leftovers.MARK}={run_id_prefix}".encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return [pid for pid in found if _alive(pid)]


def test_the_next_run_cleans_up_after_one_killed_outright(tmp_path: Path) -> None:
    namespace = f"dsp-left-{os.getpid() % 100000}" if CAN_NETNS else None
    run, folder, child = _killed_run(tmp_path, namespace)
    prefix = f"{run.pid}-"
    # what a SIGKILL leaves: the folder, the child and its own child, the namespace
    assert folder.exists() and _alive(child) and len(_marked(prefix)) >= 2
    if namespace:
        assert namespace in leftovers.namespaces()

    cleaned = leftovers.sweep(tmp_path / "runs")

    time.sleep(0.2)
    assert not _marked(prefix) and not _alive(child)
    assert not folder.exists()
    if namespace:
        assert namespace not in leftovers.namespaces()
    assert any(item.startswith("process") for item in cleaned)
    assert not list((tmp_path / "runs").glob("*.json"))


def test_a_run_still_going_is_left_alone(tmp_path: Path) -> None:
    with leftovers.recorded(tmp_path / "runs"):
        folder = tmp_path / "mine"
        folder.mkdir()
        leftovers.note("dirs", str(folder))
        assert leftovers.sweep(tmp_path / "runs") == []
        assert folder.exists() and len(list((tmp_path / "runs").glob("*.json"))) == 1
        assert os.environ[leftovers.MARK]
    assert leftovers.MARK not in os.environ
    assert not list((tmp_path / "runs").glob("*.json"))
