"""serve.py: the API in-process, a real server on 127.0.0.1, and the web page in headless Chromium.

The checkpoints are made here by main.py itself (a few training steps on tiny flags), never read
from the shared data sets or results/.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest
import torch
from conftest import require_programs
from fastapi.testclient import TestClient
from PIL import Image
from torch.optim.swa_utils import AveragedModel

import main as main_py
import serve
from checkpoints import CHECKPOINT_FORMAT
from diffusion import ConditionalGaussianDiffusion
from trainer import TrainConfig
from unet import Unet

ROOT = Path(__file__).resolve().parent.parent
T = 10  # the tiny model's time steps
TINY = ["--image_size", "8", "--unet_dim", "8", "--unet_dim_mults", "1", "2", "--batch_size", "4",
        "--demo_images", "16", "--train_steps", "2", "--save_and_sample_every", "2", "--num_samples", "4",
        "--device", "cpu", "--no-channels_last"]


def train(folder: Path, time_steps: int) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main_py.main([*TINY, "--time_steps", str(time_steps), "--save_folder", str(folder)]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder / "model.pt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("tiny"), T)


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> Path:
    """T = 1000: a request takes seconds, long enough to fill the queue or to hang up on."""
    return train(tmp_path_factory.mktemp("slow"), 1000)


CLASSES = ["airplane", "automobile", "bird"]


@pytest.fixture(scope="module")
def conditional_checkpoint(tmp_path_factory) -> Path:
    """Part 2's checkpoint layout (main.py's keys plus class_names, args class_cond), built directly."""
    torch.manual_seed(0)
    unet = Unet(dim=8, dim_mults=(1, 2), channels=3, num_classes=len(CLASSES))
    with torch.no_grad():  # untrained but not trivial: undo the zero initialisations, so the label matters
        for p in unet.parameters():
            if not p.any():
                p.normal_(0, 0.1)
        unet.label_emb.weight.normal_(0, 1.0)
    diffusion = ConditionalGaussianDiffusion(unet, image_size=8, num_classes=len(CLASSES), timesteps=T)
    args = {**asdict(TrainConfig(image_size=8, unet_dim=8, unet_dim_mults=[1, 2], time_steps=T)), "class_cond": True}
    path = tmp_path_factory.mktemp("conditional") / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "step": 7, "args": args, "model": diffusion.state_dict(),
                "ema": AveragedModel(diffusion, use_buffers=True).state_dict(), "class_names": CLASSES}, path)
    return path


@pytest.fixture(scope="module")
def conditional_client(conditional_checkpoint):
    model = serve.load_model(str(conditional_checkpoint), "cond", torch.device("cpu"))
    with TestClient(serve.create_app([model])) as c:
        yield c


@pytest.fixture(scope="module")
def client(checkpoint):
    model = serve.load_model(str(checkpoint), "tiny", torch.device("cpu"))
    with TestClient(serve.create_app([model], queue_size=4, max_images=64)) as c:
        yield c


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------- in-process

def test_models_lists_the_checkpoint(client):
    models = client.get("/api/models").json()
    assert len(models) == 1
    m = models[0]
    assert (m["name"], m["kind"], m["image_size"], m["classes"], m["train_steps"], m["timesteps"]) == \
           ("tiny", "diffusion", 8, None, 2, T)
    assert m["samplers"]["ddim"]["steps"] == [1, T] and m["samplers"]["ancestral"]["steps"] == [T, T]
    assert client.get("/healthz").json()["status"] == "ok"


def test_generate_png_is_a_grid_and_the_same_seed_gives_the_same_bytes(client):
    body = {"n": 4, "seed": 7, "steps": 5}
    first = client.post("/api/generate", json=body)
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert decode_png(first.content).size == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2)  # 2 x 2 images, 2-pixel padding
    assert client.post("/api/generate", json=body).content == first.content
    assert client.post("/api/generate", json={**body, "seed": 8}).content != first.content
    assert client.post("/api/generate", json={**body, "steps": 3}).content != first.content


def test_generate_json_gives_one_png_per_image(client):
    reply = client.post("/api/generate", json={"n": 3, "seed": 1, "format": "json"})
    assert reply.status_code == 200
    images = [decode_png(base64.b64decode(s)) for s in reply.json()["images"]]
    assert [image.size for image in images] == [(8, 8)] * 3
    assert len({image.tobytes() for image in images}) == 3


def pixels(reply) -> torch.Tensor:
    return torch.stack([torch.tensor(list(decode_png(base64.b64decode(s)).getdata())) for s in reply.json()["images"]]).float()


def test_ancestral_is_ddim_with_eta_one_on_every_step_and_differs_from_eta_zero(client):
    body = {"n": 2, "seed": 3, "format": "json"}
    ancestral = pixels(client.post("/api/generate", json={**body, "sampler": "ancestral"}))
    eta_one = pixels(client.post("/api/generate", json={**body, "sampler": "ddim", "steps": T, "eta": 1.0}))
    eta_zero = pixels(client.post("/api/generate", json={**body, "sampler": "ddim", "steps": T, "eta": 0.0}))
    assert (ancestral - eta_one).abs().max() <= 1  # equal up to float rounding of a uint8 level
    assert (ancestral - eta_zero).abs().max() > 10


def test_denoise_gif_has_a_frame_per_step(client):
    reply = client.post("/api/denoise", json={"seed": 2, "steps": 4})
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/gif"
    gif = Image.open(io.BytesIO(reply.content))
    assert gif.n_frames == 4 + 1 and gif.size == (8, 8)  # x_T and one frame per step; one image, no padding
    frames = client.post("/api/denoise", json={"seed": 2, "sampler": "ancestral", "format": "json"}).json()["frames"]
    assert len(frames) == T + 1


def test_conditional_model_is_listed_with_its_classes(conditional_client):
    m = conditional_client.get("/api/models").json()[0]
    assert (m["kind"], m["classes"], m["train_steps"], m["guidance"]) == ("conditional-diffusion", CLASSES, 7, [0.0, 20.0])
    assert m["thresholds"] == ["none", "static", "dynamic"]


def test_conditional_generate_by_class_name_or_index(conditional_client):
    body = {"n": 2, "seed": 4, "steps": 5, "guidance": 2.0, "threshold": "dynamic"}
    by_name = conditional_client.post("/api/generate", json={**body, "label": "bird"})
    assert by_name.status_code == 200, by_name.text
    assert conditional_client.post("/api/generate", json={**body, "label": 2}).content == by_name.content
    assert conditional_client.post("/api/generate", json={**body, "label": 0}).content != by_name.content
    assert conditional_client.post("/api/generate", json={**body, "label": 2, "guidance": 0}).content != by_name.content
    every_class = conditional_client.post("/api/generate", json={**body, "n": 6})  # one column per class
    assert decode_png(every_class.content).size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)


def test_conditional_ancestral_is_ddim_with_eta_one(conditional_client):
    body = {"n": 3, "seed": 9, "format": "json", "guidance": 1.5, "threshold": "dynamic"}
    ancestral = pixels(conditional_client.post("/api/generate", json={**body, "sampler": "ancestral"}))
    eta_one = pixels(conditional_client.post("/api/generate", json={**body, "steps": T, "eta": 1.0}))
    assert (ancestral - eta_one).abs().max() <= 1


CONDITIONAL_BAD_REQUESTS = [
    ({"label": "cat"}, ["label:", "unknown class 'cat'", "airplane, automobile, bird"]),
    ({"label": 3}, ["label:", "between 0 and 2"]),
    ({"label": -1}, ["label:", "between 0 and 2"]),
    ({"guidance": -0.5}, ["guidance:", "between 0.0 and 20.0"]),
    ({"guidance": 25}, ["guidance:", "between 0.0 and 20.0"]),
    ({"threshold": "soft"}, ["threshold:", "none, static, dynamic"]),
]


@pytest.mark.parametrize("body, words", CONDITIONAL_BAD_REQUESTS, ids=[json.dumps(r[0]) for r in CONDITIONAL_BAD_REQUESTS])
def test_conditional_bad_input_names_the_field_and_range(conditional_client, body, words):
    reply = conditional_client.post("/api/generate", json=body)
    assert reply.status_code == 422, reply.text
    for word in words:
        assert word in reply.json()["detail"], reply.json()["detail"]


def test_the_animation_ends_on_the_grids_first_image(client):
    body = {"seed": 11, "steps": 6, "format": "json"}
    first = pixels(client.post("/api/generate", json={**body, "n": 4}))[0]
    frames = client.post("/api/denoise", json=body).json()["frames"]
    last = torch.tensor(list(decode_png(base64.b64decode(frames[-1])).getdata())).float()
    assert (first - last).abs().max() <= 1


BAD_REQUESTS = [  # (path, body, status, words the message must contain)
    ("/api/generate", {"model": "nope"}, 422, ["model", "unknown model 'nope'", "served: tiny"]),
    ("/api/generate", {"n": 0}, 422, ["n:", "between 1 and 64"]),
    ("/api/generate", {"n": 65}, 422, ["n:", "between 1 and 64"]),
    ("/api/generate", {"n": "many"}, 422, ["n:", "integer"]),
    ("/api/generate", {"seed": -1}, 422, ["seed:", "between 0 and"]),
    ("/api/generate", {"steps": 0}, 422, ["steps:", f"between 1 and {T}"]),
    ("/api/generate", {"steps": T + 1}, 422, ["steps:", f"between 1 and {T}"]),
    ("/api/generate", {"sampler": "ancestral", "steps": 3}, 422, ["steps:", f"all T = {T} steps"]),
    ("/api/generate", {"sampler": "euler"}, 422, ["sampler:", "ddim or ancestral"]),
    ("/api/generate", {"eta": 1.5}, 422, ["eta:", "between 0.0 and 1.0"]),
    ("/api/generate", {"label": 1}, 422, ["label:", "unconditional"]),
    ("/api/generate", {"guidance": 2.0}, 422, ["guidance:", "unconditional"]),
    ("/api/generate", {"threshold": "dynamic"}, 422, ["threshold:", "static"]),
    ("/api/generate", {"format": "jpeg"}, 422, ["format:", "png or json"]),
    ("/api/generate", {"colour": "red"}, 422, ["colour:", "unknown field", "seed"]),
    ("/api/generate", [1, 2], 422, ["body:", "JSON object"]),
    ("/api/denoise", {"n": 9}, 422, ["n:", "between 1 and 8"]),
    ("/api/denoise", {"format": "png"}, 422, ["format:", "gif or json"]),
]


@pytest.mark.parametrize("path, body, status, words", BAD_REQUESTS, ids=[json.dumps(r[1]) for r in BAD_REQUESTS])
def test_bad_input_is_a_4xx_naming_the_field_and_range(client, path, body, status, words):
    reply = client.post(path, json=body)
    assert reply.status_code == status, reply.text
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for word in words:
        assert word in detail, detail


@pytest.mark.parametrize("raw", [b'{"n": ', b"not json", b'{"n": 2,}'])
def test_malformed_json_is_400(client, raw):
    reply = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("malformed JSON")
    assert client.get("/healthz").status_code == 200  # the server is still up


def test_several_models_need_a_name(checkpoint):
    models = [serve.load_model(str(checkpoint), name, torch.device("cpu")) for name in ("a", "b")]
    with TestClient(serve.create_app(models)) as c:
        reply = c.post("/api/generate", json={"n": 1})
        assert reply.status_code == 422 and "choose one of a, b" in reply.json()["detail"]
        assert c.post("/api/generate", json={"n": 1, "model": "b", "steps": 1}).status_code == 200


def test_model_names_come_from_folders():
    assert serve.model_names(["results/model.pt", "cats/model.pt", "x/results/model.pt"]) == ["results", "cats", "results-2"]


def test_the_queue_is_bounded_and_a_full_one_answers_busy():
    worker = serve.Worker(capacity=1)
    started, release = threading.Event(), threading.Event()
    future, _ = worker.submit(lambda check: (started.set(), release.wait(10)))
    assert started.wait(10)
    with pytest.raises(serve.Busy) as busy:
        worker.submit(lambda check: None)
    assert busy.value.retry_after >= 1
    release.set()
    future.result(10)
    worker.submit(lambda check: None)[0].result(10)  # room again
    worker.close()


def test_a_cancelled_job_stops_between_steps():
    worker = serve.Worker(capacity=2)
    steps = []

    def job(check):
        for i in range(1000):
            check()
            steps.append(i)
            time.sleep(0.005)

    future, cancel = worker.submit(job)
    while not steps:
        time.sleep(0.01)
    cancel.set()
    with pytest.raises(serve.Cancelled):
        future.result(10)
    assert len(steps) < 1000 and worker.counts["cancelled"] == 1
    worker.close()


# ---------------------------------------------------------------------------------------- command line

def run_serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "serve.py"), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=ROOT, env=env)


@pytest.mark.slow
def test_bad_command_lines_exit_2_with_one_line(tmp_path, checkpoint):
    not_a_checkpoint = tmp_path / "model.pt"
    not_a_checkpoint.write_bytes(b"hello")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            ((), "--load_path"),
            (("--load_path", str(tmp_path / "missing.pt")), "does not exist"),
            (("--load_path", str(not_a_checkpoint)), "is not a checkpoint"),
            (("--load_path", str(checkpoint), "--max_images", "0"), "--max_images must be at least 1"),
            (("--load_path", str(checkpoint), "--port", str(port)), "choose another --port"),
        ]
        for args, words in cases:
            result = run_serve(*args)
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
            assert words in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_pickled_program_is_refused(tmp_path):
    """weights_only=True: a checkpoint cannot run code when it is loaded."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"args": Payload(), "ema": {}}, evil)
    result = run_serve("--load_path", str(evil))
    assert result.returncode == 2 and "is not a checkpoint" in result.stderr
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- a real server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python serve.py ...` on a free port of 127.0.0.1, stopped (and waited for) on exit."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, str(ROOT / "serve.py"), *args, "--host", "127.0.0.1", "--port", str(self.port)]

    def __enter__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve.py exited: {self.process.stdout.read().decode()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("serve.py did not answer /healthz within 120 s")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/healthz", timeout=5).json()

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest.mark.slow
def test_real_server_generates_and_lists(checkpoint):
    with Server("--load_path", str(checkpoint)) as server:
        models = httpx.get(f"{server.url}/api/models", timeout=10).json()
        name = models[0]["name"]
        reply = httpx.post(f"{server.url}/api/generate", json={"n": 4, "seed": 5, "model": name}, timeout=60)
        assert reply.status_code == 200 and decode_png(reply.content).size == (22, 22)
        again = httpx.post(f"{server.url}/api/generate", json={"n": 4, "seed": 5, "model": name}, timeout=60)
        assert again.content == reply.content
        assert httpx.post(f"{server.url}/api/generate", content=b"{", timeout=10,
                          headers={"content-type": "application/json"}).status_code == 400
        assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200  # the OpenAPI page


@pytest.mark.slow
def test_busy_server_answers_503_with_retry_after(slow_checkpoint):
    with Server("--load_path", str(slow_checkpoint), "--queue_size", "1") as server:
        results = {}
        slow = threading.Thread(target=lambda: results.update(first=httpx.post(
            f"{server.url}/api/generate", json={"n": 8, "sampler": "ancestral"}, timeout=300)))
        slow.start()
        wait_for(lambda: server.health()["pending"] == 1, 30, "the first request to be queued")
        busy = httpx.post(f"{server.url}/api/generate", json={"n": 1, "steps": 1}, timeout=30)
        assert busy.status_code == 503
        assert int(busy.headers["retry-after"]) >= 1 and "busy" in busy.json()["detail"]
        slow.join(300)
        assert results["first"].status_code == 200  # the queued request was not harmed
        assert httpx.post(f"{server.url}/api/generate", json={"n": 1, "steps": 1}, timeout=30).status_code == 200


@pytest.mark.slow
def test_a_client_that_disconnects_does_not_leave_work_running(slow_checkpoint):
    with Server("--load_path", str(slow_checkpoint)) as server:
        with pytest.raises(httpx.ReadTimeout):  # hang up after 1 s of a request that takes much longer
            httpx.post(f"{server.url}/api/generate", json={"n": 16, "sampler": "ancestral"}, timeout=httpx.Timeout(30, read=1))
        wait_for(lambda: server.health()["cancelled"] == 1, 30, "the request to be cancelled")
        health = server.health()
        assert health["pending"] == 0 and health["completed"] == 0


# ---------------------------------------------------------------------------------------- the web page

BROWSER_INSTALL = "apt-get install chromium chromium-driver (Debian/Ubuntu, as root)"


def chromium(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require_programs("chromium", "chromedriver", install=BROWSER_INSTALL)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1000,800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_web_page_generate_shows_images(checkpoint, tmp_path):
    require_programs("chromium", "chromedriver", install=BROWSER_INSTALL)  # before the server starts
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with Server("--load_path", str(checkpoint)) as server:
        driver = chromium(tmp_path / "profile")
        try:
            driver.get(server.url)
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
            assert "trained 2 steps" in driver.find_element(By.ID, "info").text
            driver.find_element(By.ID, "generate").click()
            loaded = "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0;"
            wait.until(lambda d: d.execute_script(loaded, "grid") and d.execute_script(loaded, "denoise"))
            assert driver.execute_script("return document.getElementById('grid').naturalWidth") == 4 * 8 + 5 * 2
            assert driver.find_element(By.ID, "status").text.startswith("done in")
            screenshot = tmp_path / "page.png"
            driver.save_screenshot(str(screenshot))
            rect = driver.find_element(By.ID, "grid").rect
            scale = driver.execute_script("return window.devicePixelRatio")
            if os.environ.get("SERVE_SCREENSHOT"):
                shutil.copy(screenshot, os.environ["SERVE_SCREENSHOT"])
            # Bad input on the page: the server's message shows, the page stays usable.
            steps = driver.find_element(By.ID, "steps")
            driver.execute_script("arguments[0].value = 999", steps)
            driver.find_element(By.ID, "generate").click()
            wait.until(lambda d: "422" in d.find_element(By.ID, "status").text)
            assert "steps:" in driver.find_element(By.ID, "status").text
        finally:
            driver.quit()
    page = Image.open(screenshot).convert("RGB")
    low, high = page.convert("L").getextrema()
    assert high - low > 100, "the screenshot is blank"
    box = [round(v * scale) for v in (rect["x"], rect["y"], rect["x"] + rect["width"], rect["y"] + rect["height"])]
    grid = page.crop(box)
    assert grid.size[0] >= 400, grid.size  # the 42-pixel grid is shown about 440 pixels wide
    assert len(set(grid.getdata())) > 20, "the generated grid is (nearly) one colour in the screenshot"


# ---------------------------------------------------------------------------------------- the bench scripts

@pytest.mark.slow
def test_bench_scripts_run_end_to_end(checkpoint):
    """bench/bench_serve.py and bench/ddim_tradeoff.py on the tiny model, tiny settings (so they cannot rot)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load = subprocess.run([sys.executable, "bench/bench_serve.py", "--load_path", str(checkpoint), "--clients", "1", "2",
                           "--requests", "2", "--seconds", "20"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=280, check=False)
    assert load.returncode == 0, load.stderr
    rows = [line for line in load.stdout.splitlines() if line.startswith("| DDIM") or line.startswith("| ancestral")]
    assert len(rows) == 4 and all(row.split("|")[3].strip() == "2" for row in rows), load.stdout  # 2 answers each
    quality = subprocess.run([sys.executable, "bench/ddim_tradeoff.py", "--load_path", str(checkpoint), "--samples", "64",
                              "--ddim_steps", "2", "5"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
                             check=False)
    assert quality.returncode == 0, quality.stderr
    assert "pixel Frechet distance (NOT FID)" in quality.stdout
    assert [line.split("|")[1].strip() for line in quality.stdout.splitlines() if line.startswith("| ") and "steps" in line] == \
           ["DDIM, 2 steps, eta 0", "DDIM, 5 steps, eta 0", f"ancestral, {T} steps"]


# ---------------------------------------------------------------------------------------- Part 3's EBM

@pytest.fixture(scope="module")
def ebm_client(tmp_path_factory):
    """Part 3's checkpoint layout (args model = "ebm", EMA of an EnergyModel), built directly."""
    from energy import EnergyModel, EnergyNet

    torch.manual_seed(0)
    config = TrainConfig(image_size=8, model="ebm", energy_dim=8, buffer_size=16, sample_steps=5)
    ebm = EnergyModel(EnergyNet(channels=3, dim=8), image_size=8, buffer_size=16, sample_steps=5)
    path = tmp_path_factory.mktemp("ebm") / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "step": 3, "args": asdict(config), "model": ebm.state_dict(),
                "ema": AveragedModel(ebm, use_buffers=True).state_dict()}, path)
    model = serve.load_model(str(path), "ebm", torch.device("cpu"))
    with TestClient(serve.create_app([model])) as c:
        yield c


def test_ebm_is_listed_and_sampled_with_langevin(ebm_client):
    m = ebm_client.get("/api/models").json()[0]
    assert (m["kind"], m["samplers"], m["default_steps"], m["train_steps"]) == ("ebm", {"langevin": {"steps": [1, 1000]}}, 5, 3)
    body = {"n": 4, "seed": 3, "steps": 4}
    first = ebm_client.post("/api/generate", json=body)
    assert first.status_code == 200, first.text
    assert decode_png(first.content).size == (22, 22)
    assert ebm_client.post("/api/generate", json=body).content == first.content
    assert ebm_client.post("/api/generate", json={**body, "seed": 4}).content != first.content
    frames = ebm_client.post("/api/denoise", json={"seed": 3, "steps": 4, "format": "json"}).json()["frames"]
    assert len(frames) == 4 + 1


EBM_BAD_REQUESTS = [
    ({"sampler": "ddim"}, ["sampler:", "langevin"]),
    ({"steps": 0}, ["steps:", "between 1 and 1000"]),
    ({"steps": 1001}, ["steps:", "between 1 and 1000"]),
    ({"label": 1}, ["label:", "energy-based"]),
    ({"guidance": 1}, ["guidance:", "energy-based"]),
    ({"threshold": "static"}, ["threshold:", "energy-based"]),
    ({"eta": 0.5}, ["eta:", "energy-based"]),
]


@pytest.mark.parametrize("body, words", EBM_BAD_REQUESTS, ids=[json.dumps(r[0]) for r in EBM_BAD_REQUESTS])
def test_ebm_bad_input_names_the_field(ebm_client, body, words):
    reply = ebm_client.post("/api/generate", json=body)
    assert reply.status_code == 422, reply.text
    for word in words:
        assert word in reply.json()["detail"], reply.json()["detail"]
