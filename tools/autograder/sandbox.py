"""Run a submission's code in its own process, as an unprivileged user when the grader is root.

grade.py keeps the tests, the hidden reference and the results in its own process. It copies
the submission, the provided files and the public test code into a fresh folder and starts
`python sandbox.py --worker` there (as `nobody` on Gradescope, which runs the grader as root).
The worker imports the student's modules, then answers requests: "run observation NAME of test
module M on the student's class with these inputs". Observations (see grading/) return plain
data: tensors, numbers, strings, lists, dicts. Nothing else crosses back, and the grader reads it
with torch.load(weights_only=True), so a submission cannot make the grader run code.

A request that gets no answer within its time limit kills the worker (its whole process group);
the next request starts a fresh one. See THREAT_MODEL.md for what this does and does not prevent.

The worker says "alive" once Python, torch and the grading package are imported, before it imports any student
code. A worker that never says it cannot be the student's doing: start() raises SandboxBroken, and
grade.py stops without scoring anyone.
"""

from __future__ import annotations

import io
import os
import pwd
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HEADER = struct.Struct(">Q")
MAX_MESSAGE = 256 * 2**20  # bytes: far above any observation (the largest is a few MB)
# A user name or a numeric uid; tools/grade_class.py gives each of its parallel graders a uid of its own.
UNPRIVILEGED_USER = os.environ.get("AUTOGRADER_SANDBOX_USER", "nobody")
PYTHON = sys.executable  # the worker's interpreter


class SandboxBroken(Exception):
    """The worker could not start Python and import torch, before any student code ran: the grader's fault."""


# ---- both sides: length-prefixed torch.save messages over pipes --------------------------------

def send(fd: int, message) -> None:
    buffer = io.BytesIO()
    torch.save(message, buffer)
    data = HEADER.pack(len(buffer.getvalue())) + buffer.getvalue()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes | None:
    chunks, left = [], size
    while left:
        if deadline is not None:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                return None
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd: int, deadline: float | None = None):
    """The next message, or None if the deadline passes first. Raises EOFError if the other side is gone."""
    header = _read_exactly(fd, HEADER.size, deadline)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes")
    data = _read_exactly(fd, size, deadline)
    if data is None:
        return None
    return torch.load(io.BytesIO(data), weights_only=True)  # plain data only: never runs code


# ---- the grader's side -------------------------------------------------------------------------

class Sandbox:
    """A worker process holding the student's modules, and how to ask it for observations."""

    def __init__(self, folder: Path, modules: list[str], time_limit_s: float, privileged: bool | None = None):
        self.folder, self.modules, self.time_limit_s = folder, modules, time_limit_s
        self.privileged = _can_switch_user() if privileged is None else privileged
        self.process: subprocess.Popen | None = None
        self.import_error: str | None = None
        self.restarts = 0

    @classmethod
    def prepare(cls, files: dict[str, Path], modules: list[str], time_limit_s: float) -> Sandbox:
        """Copy `files` ({name in the folder: source}) and this script into a fresh folder the worker can read."""
        folder = Path(tempfile.mkdtemp(prefix="sandbox-"))
        for name, source in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        shutil.copyfile(Path(__file__), folder / "sandbox.py")
        home = folder / "home"  # the only place the worker may write
        home.mkdir()
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        sandbox = cls(folder, modules, time_limit_s)
        if sandbox.privileged:
            os.chown(home, *_user_ids())
        home.chmod(0o700)
        return sandbox

    def start(self) -> None:
        requests_read, self._requests = os.pipe()
        self._answers, answers_write = os.pipe()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.folder / "home"),
               "TMPDIR": str(self.folder / "home"), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        options = {}
        if self.privileged:
            uid, gid = _user_ids()
            options = {"user": uid, "group": gid, "extra_groups": []}
        errors = tempfile.TemporaryFile()  # the worker's stderr until it is alive (no student code has run yet)
        try:
            self.process = subprocess.Popen(
                [PYTHON, "-I", "-B", "sandbox.py", "--worker", str(requests_read), str(answers_write),
                 str(self.time_limit_s), ",".join(self.modules)],
                cwd=self.folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                pass_fds=(requests_read, answers_write), start_new_session=True, preexec_fn=_limits, **options)
        except OSError as error:
            errors.close()
            raise SandboxBroken(f"cannot start {PYTHON} as {self.user()} ({error})") from None
        finally:
            os.close(requests_read)
            os.close(answers_write)
        try:
            alive = self._answer(time.monotonic() + 120)
        except Exception:  # noqa: BLE001 - a dead worker, or bytes that are not a message
            alive = None
        if not (isinstance(alive, dict) and alive.get("alive")):
            self.stop()
            errors.seek(0)
            lines = errors.read()[-4000:].decode(errors="replace").strip().splitlines()
            errors.close()
            why = lines[-1].strip() if lines else "no answer within 120 s, and no error message"
            raise SandboxBroken(f"{PYTHON} could not start and import torch as {self.user()} ({why})")
        errors.close()
        limit = 3 * self.time_limit_s + 60
        try:
            hello = self._answer(time.monotonic() + limit)
        except Exception:  # noqa: BLE001 - a dead worker, or bytes that are not a message
            hello = {}
        names = " and ".join(f"{m}.py" for m in self.modules)
        if hello is None:
            self.stop()
            self.import_error = f"importing {names} did not finish within {limit:g} s (an infinite loop at import?)"
        elif not isinstance(hello, dict) or "ready" not in hello:
            self.stop()
            self.import_error = f"importing {names} stopped the process (does it call exit() or os._exit?)"
        elif hello.get("import_error"):
            self.import_error = str(hello["import_error"])

    def user(self) -> str:
        """Whom the worker runs as, in words."""
        return f"user {UNPRIVILEGED_USER}" if self.privileged else f"this grader's user ({pwd.getpwuid(os.geteuid()).pw_name})"

    def observe(self, module: str, name: str, remote_class, args: tuple):
        """Run an observation in the worker; its plain-data result, or the failure it raised."""
        import grading
        if self.process is None or self.process.poll() is not None:
            if self.process is not None:
                self.restarts += 1
            self.start()
        if self.import_error:
            grading.fail(self.import_error)
        # Generous: an observation makes a few calls of at most time_limit_s each (the worker stops those
        # itself); this only catches code that ignores the worker's own time limit.
        limit = 3 * self.time_limit_s + 10
        try:
            send(self._requests, {"module": module, "name": name, "class": [remote_class.module, remote_class.attribute],
                                  "args": list(args)})
            answer = self._answer(time.monotonic() + limit)
        except Exception as error:  # noqa: BLE001 - a dead worker, or bytes that are not a message
            self.stop()
            grading.fail(f"your code stopped the process that ran it ({type(error).__name__}): does it call "
                         "os._exit, kill its process or crash Python?")
        if answer is None:
            self.stop()
            grading.fail(f"timed out after {limit:g} s (an infinite loop that ignores the time limit?)")
        if not isinstance(answer, dict):
            self.stop()
            grading.fail("your code wrote to the grader's channel")
        if "failure" in answer:
            grading.fail(str(answer["failure"]), tuple(str(b) for b in answer.get("blame", [])))
        return grading.decode(answer.get("value"))

    def _answer(self, deadline: float):
        return receive(self._answers, deadline)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # the worker and anything it started
            except ProcessLookupError:
                pass
            self.process.wait()
        for fd in ("_requests", "_answers"):
            if hasattr(self, fd):
                try:
                    os.close(getattr(self, fd))
                except OSError:
                    pass
                delattr(self, fd)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _user_ids() -> tuple[int, int]:
    if UNPRIVILEGED_USER.isdigit():  # a uid that need not be in /etc/passwd
        return int(UNPRIVILEGED_USER), int(UNPRIVILEGED_USER)
    user = pwd.getpwnam(UNPRIVILEGED_USER)
    return user.pw_uid, user.pw_gid


def _can_switch_user() -> bool:
    """Root, and the interpreter usable by every user: then the worker runs as UNPRIVILEGED_USER. (Not on a
    machine where Python lives under /root: there the worker runs as this user, and says so.)"""
    if os.geteuid() != 0:
        return False
    path = Path(os.path.realpath(sys.executable))
    usable = all(p.stat().st_mode & 0o001 for p in path.parents) and path.stat().st_mode & 0o005 == 0o005
    if not usable:
        print(f"sandbox: {path} cannot be run by {UNPRIVILEGED_USER}: the student's code runs as root, in its own "
              "process only. Install Python where every user can run it (Gradescope's python3 is).", file=sys.stderr)
    return usable


def _limits() -> None:
    """In the worker, before it runs anything: no core files, bounded files and processes."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 2**20, 64 * 2**20))
    resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))


# ---- the worker's side -------------------------------------------------------------------------

def worker(requests: int, answers: int, time_limit_s: float, modules: list[str]) -> None:
    sys.path.insert(0, os.getcwd())
    import importlib

    import pytest

    import grading
    grading.TIME_LIMIT_S = time_limit_s
    send(answers, {"alive": True})
    devnull = os.open(os.devnull, os.O_WRONLY)  # from here on, what is printed comes from student code
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        for module in modules:
            importlib.import_module(module)
    except BaseException as error:  # noqa: BLE001 - a syntax error, a missing package, anything at import
        send(answers, {"ready": True, "import_error": grading.describe_import_error(module, error)})
        return
    with grading.fake_gpu() as gpu:  # its first use imports much of torch: not inside a timed request
        torch.zeros(1, device=gpu)
    send(answers, {"ready": True})
    while True:
        try:
            request = receive(requests)
        except EOFError:
            return
        try:
            observation = grading.find_observation(request["module"], request["name"])
            student_class = getattr(sys.modules[request["class"][0]], request["class"][1])
            value = grading.run_observation(observation, student_class, tuple(request["args"]))
            answer = {"value": grading.encode(value)}
        except pytest.fail.Exception as failure:
            answer = {"failure": str(failure.msg), "blame": list(getattr(failure, "blame", ()))}
        except BaseException as error:  # noqa: BLE001 - a bug outside the calls `grading.call` guards
            answer = {"failure": f"{type(error).__name__}: {error}"}
        send(answers, answer)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), [m for m in sys.argv[5].split(",") if m])
